"""genlab's FID Inception-v3 against the reference implementations' own code, with shared random weights.

The real weights (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) cannot be downloaded
here, so what is checked is everything but them: that genlab's network is the same function as
pytorch-fid's (torchvision's Inception3 with the FID patches, vendored unchanged in
``tests/reference/fid_inception.py``) block by block, given identical weights; and that the
preprocessing (grayscale to RGB, bilinear resize to 299 x 299, [0, 1] -> [-1, 1]) follows its
definition, computed here independently in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.data import load_dataset
from genlab.metrics.inception import FIDInceptionV3
from reference.fid_inception import InceptionV3 as ReferenceInceptionV3


def _random_weights(model: torch.nn.Module, seed: int) -> None:
    """Weights that keep activations alive through 94 layers: He-normal convolutions and BatchNorm
    with running statistics and affine terms away from the identity (so that a BatchNorm that
    was skipped, or used with the wrong eps, changes the output)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if name.endswith("conv.weight"):
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        elif name.endswith("bn.weight") or name.endswith("bn.running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=g))
        elif name.endswith("bn.bias") or name.endswith("bn.running_mean"):
            t.copy_(0.2 * torch.randn(t.shape, generator=g))


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    ours = FIDInceptionV3().eval()
    _random_weights(ours, seed=1)
    reference = ReferenceInceptionV3(output_blocks=[0, 1, 2, 3]).eval()
    # genlab's weights under torchvision's names, strictly: every key has its place, none is left over
    _named_reference(reference).load_state_dict(ours.state_dict(), strict=True)
    return ours, reference


def _named_reference(reference: torch.nn.Module) -> torch.nn.Module:
    """The reference wrapper's modules under torchvision's names: pytorch-fid keeps the modules of
    the Inception3 it built but names them by block position. Its classifier (fc), which FID
    never uses, is left out."""
    b = reference.blocks
    names = {
        "Conv2d_1a_3x3": b[0][0],
        "Conv2d_2a_3x3": b[0][1],
        "Conv2d_2b_3x3": b[0][2],
        "Conv2d_3b_1x1": b[1][0],
        "Conv2d_4a_3x3": b[1][1],
        **{m: b[2][i] for i, m in enumerate(["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a"])},
        **{m: b[2][4 + i] for i, m in enumerate(["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"])},
        **{m: b[3][i] for i, m in enumerate(["Mixed_7a", "Mixed_7b", "Mixed_7c"])},
    }
    holder = torch.nn.Module()
    for name, module in names.items():
        holder.add_module(name, module)
    return holder


def _block_outputs(ours: FIDInceptionV3, x: torch.Tensor) -> list[torch.Tensor]:
    """genlab's activations where pytorch-fid's four blocks end: the inputs of Conv2d_3b_1x1,
    Mixed_5b and Mixed_7a, and the pooled features."""
    seen: list[torch.Tensor] = []
    hooks = [
        getattr(ours, name).register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
        for name in ("Conv2d_3b_1x1", "Mixed_5b", "Mixed_7a")
    ]
    try:
        features = ours(x)
    finally:
        for h in hooks:
            h.remove()
    return [*seen, features]


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    test = load_dataset("mnist", "test", data_dir=mnist_dir)
    return test.images[:3].float().div(255)  # (3, 1, 28, 28) in [0, 1]


@torch.no_grad()
def test_every_block_matches_pytorch_fid_with_the_same_weights(networks, digits):
    ours, reference = networks
    mine = _block_outputs(ours, digits)
    theirs = reference(digits.repeat(1, 3, 1, 1))  # pytorch-fid takes RGB; genlab repeats grey itself
    theirs[3] = theirs[3].flatten(1)
    shapes = [(3, 64, 73, 73), (3, 192, 35, 35), (3, 768, 17, 17), (3, 2048)]
    for block, (a, b, shape) in enumerate(zip(mine, theirs, shapes)):
        assert tuple(a.shape) == shape == tuple(b.shape), f"block {block}"
        assert float(b.std()) > 1e-3, f"block {block}: the random weights let the signal die; the check is empty"
        err = float((a - b).abs().max() / b.abs().max())
        assert err < 1e-5, f"block {block}: genlab differs from pytorch-fid by {err:.2e} (relative to the max)"


@torch.no_grad()
def test_a_changed_block_is_noticed(networks, digits):
    """The comparison can fail: the FID graph's max pool in Mixed_7c replaced by an average pool
    (the most common porting slip) moves the features far beyond the tolerance."""
    ours, reference = networks
    ours.Mixed_7c.pool = "avg"
    try:
        mine = ours(digits)
    finally:
        ours.Mixed_7c.pool = "max"
    theirs = reference(digits.repeat(1, 3, 1, 1))[3].flatten(1)
    assert float((mine - theirs).abs().max() / theirs.abs().max()) > 1e-3


def _bilinear_half_pixel(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize by its definition (align_corners=False, as pytorch-fid and TF's FID code):
    output pixel i samples the input at (i + 0.5) * in / out - 0.5, clamped to the image, and
    interpolates linearly between the two nearest input pixels along each axis."""

    def weights(n_in: int) -> np.ndarray:
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = np.zeros((size, n_in))
        np.add.at(w, (np.arange(size), lo), 1 - (src - lo))
        np.add.at(w, (np.arange(size), hi), src - lo)
        return w

    wy, wx = weights(image.shape[0]), weights(image.shape[1])
    return wy @ image.astype(np.float64) @ wx.T


@torch.no_grad()
def test_preprocessing_is_grey_to_rgb_bilinear_299_then_minus_one_to_one(digits):
    net = FIDInceptionV3().eval()
    seen: list[torch.Tensor] = []
    net.Conv2d_1a_3x3.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    net(digits)
    x = seen[0]
    assert tuple(x.shape) == (3, 3, 299, 299)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2]), "grey repeated into R, G and B"
    for i in range(len(digits)):
        expected = 2 * _bilinear_half_pixel(digits[i, 0].numpy(), 299) - 1
        np.testing.assert_allclose(x[i, 0].double().numpy(), expected, atol=1e-5)  # float32 coordinates: ~3e-6
    # the ends of the scale: black is -1, white is +1 (not 0..1, not 0..255)
    net(torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28)]))
    assert torch.allclose(seen[1][0], torch.full_like(seen[1][0], -1.0))
    assert torch.allclose(seen[1][1], torch.full_like(seen[1][1], 1.0))


@torch.no_grad()
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 45, 37), (2, 1, 64, 64)], ids=["rgb32", "rgb45x37", "grey64"])
def test_rgb_and_other_sizes_match_pytorch_fid(networks, shape):
    """Colour images and sizes other than 28x28 go through the same resize and network as in pytorch-fid
    (whose wrapper takes RGB at any size and resizes to 299 x 299 itself)."""
    ours, reference = networks
    x = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    mine = ours(x)
    theirs = reference(x if shape[1] == 3 else x.repeat(1, 3, 1, 1))[3].flatten(1)
    assert tuple(mine.shape) == (2, 2048) and float(theirs.std()) > 1e-3
    err = float((mine - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-5, f"{shape}: genlab differs from pytorch-fid by {err:.2e} (relative to the max)"


@torch.no_grad()
def test_rgb_preprocessing_resizes_each_channel_and_features_take_uint8():
    from genlab.metrics.inception import inception_features

    net = FIDInceptionV3().eval()
    rgb = np.random.default_rng(6).integers(0, 256, (2, 3, 40, 24), dtype=np.uint8)
    seen: list[torch.Tensor] = []
    hook = net.Conv2d_1a_3x3.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    features = inception_features(net, rgb, batch_size=2)  # (N, 3, H, W) uint8 of any size is accepted
    hook.remove()
    x = seen[0]
    assert tuple(x.shape) == (2, 3, 299, 299) and features.shape == (2, 2048)
    assert not torch.equal(x[:, 0], x[:, 1]), "colour channels are kept apart, not averaged"
    for i in range(2):
        for c in range(3):
            expected = 2 * _bilinear_half_pixel(rgb[i, c] / 255.0, 299) - 1
            np.testing.assert_allclose(x[i, c].double().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(features, net(torch.from_numpy(rgb).float() / 255).double().numpy(), rtol=1e-6)
