"""Tests for genlab.models.gan: presets, the two-network step, losses, penalties, EMA, progress pictures."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models import build_model
from genlab.models.base import StepContext, StepNoise, TrainSettings, config_from_dict
from genlab.models.gan import (
    GAN,
    PRESETS,
    GANConfig,
    MinibatchStd,
    d_loss,
    diff_augment,
    g_loss,
    gradient_penalty,
    r1_penalty,
)
from genlab.training.callbacks import ema_decay_at, ema_update

B = 8


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: intra-op threads gain little, and on busy shared cores they spin against
    other jobs (the real-data test ran 10x slower with 2 threads than with 1 under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(preset: str | None = None, seed: int = 0, **overrides) -> GAN:
    cfg = PRESETS[preset].model if preset else GANConfig()
    cfg = dataclasses.replace(cfg, **overrides)
    torch.manual_seed(seed)
    return build_model("gan", cfg)


def ctx(step: int, seed: int = 0, lr: float = 2e-4) -> StepContext:
    noise = StepNoise(torch.Generator().manual_seed(seed * 100_003 + step))
    return StepContext(step=step, noise=noise, settings=TrainSettings(lr=lr))


def batch(shape=(1, 28, 28), n: int = B, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(10, (n,), generator=g)


def step(model: GAN, nets, opts, x, y, c: StepContext) -> dict:
    """One step as the trainer takes it: the family's step, then the EMA callback's update."""
    out = model.train_step(nets, opts, x, y, c)
    for average, source in model.ema_pairs():
        ema_update(average, source, ema_decay_at(model.ema_decay, c.step))
    return {**out.logs, "applied": out.applied}


def run_steps(model: GAN, n_steps: int, seed: int = 0, **batch_kw) -> dict:
    opts = model.configure_optimizers(TrainSettings(lr=2e-4))
    nets = model.networks()
    logs = {}
    for i in range(n_steps):
        x, y = batch(seed=i + 1, **batch_kw)
        logs = step(model, nets, opts, x, y, ctx(i, seed))
    return logs


def clone_params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def unchanged(before: list[torch.Tensor], module: nn.Module) -> set[str]:
    return {n for a, (n, b) in zip(before, module.named_parameters()) if torch.equal(a, b)}


# -- presets and the step -------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_builds_and_a_step_changes_both_networks(name: str) -> None:
    model = make(name)
    g0, d0 = clone_params(model.generator), clone_params(model.discriminator)
    ema0 = clone_params(model.generator_ema) if model.generator_ema is not None else None
    logs = run_steps(model, 1)
    assert not unchanged(g0, model.generator)
    # D's output bias has no gradient when it cancels: always in f - r (wgan-gp), and for the hinge
    # at initialisation, when every logit is inside the margin
    expected = {"head.bias"} if PRESETS[name].model.loss in ("wgan-gp", "hinge") else set()
    assert unchanged(d0, model.discriminator) <= expected
    if ema0 is not None:
        assert any(not torch.equal(a, b) for a, b in zip(ema0, model.generator_ema.parameters()))
    assert {"loss_d", "loss_g", "d_real", "d_fake", "applied"} <= set(logs)
    for k, v in logs.items():
        assert isinstance(v, torch.Tensor) and not v.requires_grad and v.dim() <= 1, k
        assert torch.isfinite(v).all(), k
    assert float(logs["applied"]) == 1.0
    if PRESETS[name].model.loss in ("ns", "minimax"):
        assert 0 < float(logs["d_real"]) < 1 and 0 < float(logs["d_fake"]) < 1
    # the preset's config survives the JSON round trip the run directory uses
    cfg = PRESETS[name].model
    assert config_from_dict(GANConfig, json.loads(json.dumps(dataclasses.asdict(cfg))), "model") == cfg
    assert {"epochs", "batch_size", "lr"} <= set(PRESETS[name].train)


def test_ema_and_optimizers_exclude_the_ema_copy() -> None:
    model = make("dcgan")
    assert set(model.networks()) == {"generator", "discriminator"}
    opts = model.configure_optimizers(TrainSettings(lr=1e-4))
    opt_ids = {id(p) for o in opts.values() for g in o.param_groups for p in g["params"]}
    assert not any(id(p) in opt_ids for p in model.generator_ema.parameters())
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    assert opts["generator"].param_groups[0]["lr"] == 1e-4
    assert opts["generator"].param_groups[0]["betas"] == (0.5, 0.999)


def test_ema_update_follows_the_warmed_up_decay() -> None:
    model = make("dcgan", width=8)
    ema0 = clone_params(model.generator_ema)
    run_steps(model, 1)
    decay = min(0.999, 1 / 10)  # step 0 of the warm-up
    for e0, e, g in zip(ema0, model.generator_ema.parameters(), model.generator.parameters()):
        torch.testing.assert_close(e, decay * e0 + (1 - decay) * g)
    for be, bg in zip(model.generator_ema.buffers(), model.generator.buffers()):
        assert torch.equal(be, bg)  # BN statistics copied


def test_sample_uses_the_ema_generator() -> None:
    model = make("dcgan", width=8)
    run_steps(model, 2)
    z_gen = torch.Generator().manual_seed(5)
    s = model.sample(4, generator=z_gen)
    z = torch.randn(4, model.config.latent_dim, generator=torch.Generator().manual_seed(5))
    model.generator_ema.eval()
    torch.testing.assert_close(s, (model.generator_ema(z) + 1) / 2)


def test_d_steps_draws_fresh_noise_per_discriminator_step() -> None:
    model = make("wgan-gp", width=8)
    c = ctx(0)
    state = c.noise.generator.get_state()
    step(model, model.networks(), model.configure_optimizers(TrainSettings(lr=1e-4)), *batch(), c)
    # 5 D steps, each z (B, 100) + eps (B,): the generator advanced past 5 z draws
    g = torch.Generator()
    g.set_state(state)
    for _ in range(5):
        torch.randn(B, 100, generator=g)
        torch.rand(B, generator=g)
    assert torch.equal(g.get_state(), c.noise.generator.get_state())


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 64, 64)])
def test_32_and_64_px_dcgan_and_wrong_image_shape(shape: tuple) -> None:
    model = make("dcgan", width=8, image_shape=shape)
    assert model.sample(3).shape == (3, *shape)
    assert model.discriminator(torch.rand(2, *shape) * 2 - 1).shape == (2,)
    logs = run_steps(model, 1, shape=shape)
    assert torch.isfinite(logs["loss_d"])
    with pytest.raises(ConfigError, match="image_shape"):
        run_steps(model, 1, shape=(1, 28, 28))


@pytest.mark.parametrize(
    "bad",
    [
        dict(loss="bce"),
        dict(image_shape=(1, 30, 30)),
        dict(d_steps=0),
        dict(ema_decay=1.0),
        dict(betas=(0.5,)),
        dict(arch="resnet"),
        dict(augment="translation,flip"),
        dict(r1_gamma=-1.0),
        dict(r1_every=0),
    ],
)
def test_invalid_config_is_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(GANConfig(), **bad).validate()


def test_batchnorm_switch_and_no_bn_in_penalised_or_sn_critics() -> None:
    def has_bn(m: nn.Module) -> bool:
        return any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())

    assert has_bn(make("dcgan").generator) and has_bn(make("dcgan").discriminator)
    off = make("dcgan", batchnorm=False)
    assert not has_bn(off.generator) and not has_bn(off.discriminator)
    assert has_bn(make("wgan-gp").generator) and not has_bn(make("wgan-gp").discriminator)
    assert not has_bn(make("hinge-sn").discriminator)
    assert not has_bn(make("seed").generator)


# -- sampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seed", "dcgan"])
def test_sample_shape_range_and_determinism(name: str) -> None:
    model = make(name)
    model.train()
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    c = model.sample(6, generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.generator.training  # sampling restores the training mode
    # eval-mode BN: an image does not depend on the rest of its batch
    z = torch.randn(6, model.config.latent_dim)
    torch.testing.assert_close(model._decode(z[:2], None), model._decode(z, None)[:2])


def test_conditional_sample_respects_labels() -> None:
    model = make("cgan", width=8)
    run_steps(model, 1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3])
    s = model.sample(11, labels=labels, generator=torch.Generator().manual_seed(0))
    assert s.shape == (11, 1, 28, 28)
    same_z_other_label = model.sample(11, labels=(labels + 1) % 10, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(s, same_z_other_label)
    assert model.sample(4).shape == (4, 1, 28, 28)  # default labels 0, 1, 2, 3
    with pytest.raises(ConfigError, match="labels"):
        model.sample(3, labels=torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="labels"):
        model.sample(2, labels=torch.tensor([0, 10]))
    # the projection term: D's logit moves with the label for the same image
    x, _ = batch()
    d = model.discriminator.eval()
    assert not torch.allclose(d(x, torch.zeros(B, dtype=torch.long)), d(x, torch.ones(B, dtype=torch.long)))


# -- losses: known answers --------------------------------------------------------------------
def test_losses_at_known_points() -> None:
    zero = torch.zeros(5)
    log2 = math.log(2)
    for kind in ("ns", "minimax"):
        assert d_loss(zero, zero, kind).item() == pytest.approx(2 * log2)
    assert g_loss(zero, "ns").item() == pytest.approx(log2)
    assert g_loss(zero, "minimax").item() == pytest.approx(-log2)
    big = torch.full((5,), 3.0)
    assert d_loss(big, -big, "hinge").item() == 0.0  # margins beyond 1 cost nothing
    assert d_loss(zero, zero, "hinge").item() == pytest.approx(2.0)
    assert g_loss(big, "hinge").item() == pytest.approx(-3.0)
    assert d_loss(torch.ones(5), zero, "lsgan").item() == 0.0
    assert g_loss(torch.ones(5), "lsgan").item() == 0.0
    assert d_loss(torch.full((5,), 2.0), torch.full((5,), -1.0), "wgan-gp").item() == pytest.approx(-3.0)
    assert g_loss(torch.full((5,), -1.0), "wgan-gp").item() == pytest.approx(1.0)


def test_cross_entropy_losses_match_bce_and_stay_finite() -> None:
    r, f = torch.randn(7), torch.randn(7)
    bce = nn.functional.binary_cross_entropy
    ref = bce(torch.sigmoid(r), torch.ones(7)) + bce(torch.sigmoid(f), torch.zeros(7))
    torch.testing.assert_close(d_loss(r, f, "ns"), ref)
    torch.testing.assert_close(g_loss(f, "ns"), bce(torch.sigmoid(f), torch.ones(7)))
    torch.testing.assert_close(g_loss(f, "minimax"), torch.log1p(-torch.sigmoid(f)).mean())
    huge = torch.full((3,), 200.0)  # sigmoid is exactly 1 in float32 here; the logit form is not fooled
    assert d_loss(huge, -huge, "ns").item() == pytest.approx(0.0, abs=1e-6)
    assert d_loss(-huge, huge, "ns").item() == pytest.approx(400.0)
    assert g_loss(-huge, "ns").item() == pytest.approx(200.0)


class LinearCritic(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y=None):
        return x.flatten(1) @ self.w


def test_gradient_penalty_known_answers() -> None:
    w = torch.randn(784)
    real, fake = torch.rand(16, 1, 28, 28), torch.rand(16, 1, 28, 28)
    eps = torch.rand(16)
    gp = gradient_penalty(LinearCritic(w / w.norm()), real, fake, eps)
    assert gp.item() == pytest.approx(0.0, abs=1e-10)  # 1-Lipschitz with a unit gradient everywhere
    critic = LinearCritic(3 * w / w.norm())
    gp = gradient_penalty(critic, real, fake, eps)
    assert gp.item() == pytest.approx(4.0, rel=1e-5)  # (3 - 1)^2
    gp.backward()  # differentiable in the critic's weights: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(critic.w.grad, 2 * (3 - 1) * w / w.norm())


def test_r1_penalty_known_answer_and_its_gradient() -> None:
    w = torch.randn(784)
    real = torch.rand(16, 1, 28, 28).requires_grad_(True)
    critic = LinearCritic(w)
    r1 = r1_penalty(critic(real), real)
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)  # grad_x <w, x> = w for every image
    r1.backward()  # differentiable in the critic's weights: d/dw |w|^2 = 2w
    torch.testing.assert_close(critic.w.grad, 2 * w)


# -- DiffAugment ---------------------------------------------------------------------------
def fixed_draws(value: float):
    """rand(*shape) that always draws ``value``: a chosen augmentation instead of a random one."""
    return lambda *shape: torch.full(shape, value)


def test_translation_moves_the_image_by_the_drawn_offset_and_fills_with_zeros() -> None:
    x = torch.arange(1.0, 28 * 28 + 1).view(1, 1, 28, 28).repeat(2, 1, 1, 1)
    # offsets in [-4, 4] (1/8 of 28, rounded): a draw of 0.99 is +4 in both axes, 0.5 is 0
    up_left = diff_augment(x, ("translation",), fixed_draws(0.99))
    assert torch.equal(up_left[:, :, :24, :24], x[:, :, 4:, 4:])  # out[i, j] = x[i + 4, j + 4]
    assert up_left[:, :, 24:, :].abs().sum() == 0 and up_left[:, :, :, 24:].abs().sum() == 0
    assert torch.equal(diff_augment(x, ("translation",), fixed_draws(0.5)), x)
    down_right = diff_augment(x, ("translation",), fixed_draws(0.0))
    assert torch.equal(down_right[:, :, 4:, 4:], x[:, :, :24, :24])


def test_cutout_zeroes_one_half_size_square_and_keeps_the_rest() -> None:
    x = torch.rand(3, 1, 28, 28) + 1.0  # no zeros of its own
    centred = diff_augment(x, ("cutout",), fixed_draws(0.5))  # centre (14, 14): rows and columns 7..20
    assert torch.equal((centred == 0).sum(dim=(1, 2, 3)), torch.full((3,), 14 * 14))
    assert centred[:, :, 7:21, 7:21].abs().sum() == 0
    corner = diff_augment(x, ("cutout",), fixed_draws(0.0))  # centre (0, 0): the square overhangs the corner
    assert (corner == 0).sum().item() == 3 * 7 * 7 and corner[:, :, :7, :7].abs().sum() == 0


def test_augmentation_is_differentiable_and_per_sample() -> None:
    g = torch.Generator().manual_seed(3)
    rand = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    x = torch.rand(64, 1, 28, 28, requires_grad=True)
    out = diff_augment(x, ("color", "translation", "cutout"), rand)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    same = diff_augment(x.detach()[:1].repeat(64, 1, 1, 1), ("translation", "cutout"), rand)
    assert len({tuple(img.flatten().tolist()) for img in same}) > 32  # each sample drew its own augmentation


def test_augmented_and_r1_training_steps_are_seeded_and_change_both_networks() -> None:
    def train(noise_seed: int) -> dict:
        model = make("dcgan", seed=0, width=8, augment="translation,cutout,color", r1_gamma=1.0, r1_every=2)
        run_steps(model, 3, seed=noise_seed)
        return model.state_dict()

    a, b, c = train(0), train(0), train(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    init = make("dcgan", seed=0, width=8).state_dict()
    for net in ("generator.", "discriminator."):
        assert any(not torch.equal(a[k], init[k]) for k in a if k.startswith(net))


# -- speed work that must not change the arithmetic ----------------------------------------------
def test_project_and_reshape_is_the_transposed_conv_it_replaces() -> None:
    from genlab.models.gan.networks import ProjectAndReshape

    torch.manual_seed(0)
    fast = ProjectAndReshape(100, 16, 7, 1, 0, bias=True)
    plain = nn.ConvTranspose2d(100, 16, 7, 1, 0, bias=True)
    plain.load_state_dict(fast.state_dict())  # same parameter names and shapes: old runs load unchanged
    z = torch.randn(5, 100, 1, 1)
    torch.testing.assert_close(fast(z), plain(z), rtol=1e-5, atol=1e-6)
    wide = torch.randn(2, 100, 3, 3)  # not a 1x1 input: the general transposed conv
    torch.testing.assert_close(fast(wide), plain(wide))


def test_generator_step_leaves_d_untouched_and_matches_an_unfrozen_d(monkeypatch) -> None:
    """D's weights get no gradient in G's step (it was discarded anyway); G's update is unchanged."""
    import contextlib

    import genlab.models.gan.model as gan_model

    def g_after_two_steps() -> list[torch.Tensor]:
        model = make("dcgan", width=8)
        run_steps(model, 2)
        assert all(p.requires_grad for p in model.discriminator.parameters())  # restored after G's step
        return clone_params(model.generator)

    fast = g_after_two_steps()
    monkeypatch.setattr(gan_model, "frozen", lambda module: contextlib.nullcontext())
    plain = g_after_two_steps()
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_channels_last_hooks_change_layouts_not_values() -> None:
    from genlab.models.gan.networks import keep_activations_channels_last

    model = make("dcgan", width=8)
    plain = make("dcgan", width=8)  # same seed, same weights, no hooks
    for net in (plain.generator, plain.discriminator):
        for m in net.modules():
            m._forward_hooks.clear()
    z = torch.randn(4, 100)
    x = torch.rand(4, 1, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x_plain = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(model.generator(z), plain.generator(z))
    model.discriminator(x).sum().backward()
    plain.discriminator(x_plain).sum().backward()
    torch.testing.assert_close(x.grad, x_plain.grad)
    h = model.discriminator.features[:2](x)  # conv -> LeakyReLU: the hook's output
    assert h.is_contiguous(memory_format=torch.channels_last)
    x_nchw = x_plain.detach().contiguous()
    assert not plain.discriminator.features[:2](x_nchw).is_contiguous(memory_format=torch.channels_last)  # no hook
    keep_activations_channels_last(plain.discriminator)
    assert plain.discriminator.features[:2](x_nchw).is_contiguous(memory_format=torch.channels_last)


# -- spectral norm --------------------------------------------------------------------------
def test_spectral_norm_bounds_the_largest_singular_value() -> None:
    model = make("hinge-sn", width=16)
    d = model.discriminator.train()
    x, _ = batch(n=4)
    with torch.no_grad():
        for _ in range(50):  # each training forward is one power iteration
            d(x)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.02)


def test_state_dict_round_trips_through_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = make("hinge-sn", width=8, conditional=True, minibatch_std=True)
    run_steps(model, 2)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    assert not {"fixed_z", "real_diversity"} & set(model.state_dict())  # monitoring state lives in callbacks
    assert any(k.startswith("generator_ema.") for k in model.state_dict())
    other = make("hinge-sn", seed=99, width=8, conditional=True, minibatch_std=True)
    other.load_state_dict(load_file(tmp_path / "model.safetensors"))
    model.eval()
    other.eval()
    x, y = batch()
    torch.testing.assert_close(other.discriminator(x * 2 - 1, y), model.discriminator(x * 2 - 1, y))
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(other.sample(5, generator=g()), model.sample(5, generator=g()))
    assert torch.equal(other.sample(5, generator=g()), other.sample(5, generator=g()))


# -- reproducibility ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,overrides", [("cgan", dict(width=8, minibatch_std=True)), ("wgan-gp", dict(width=8)), ("seed", {})]
)
def test_same_seeds_give_identical_weights(name: str, overrides: dict) -> None:
    def train(noise_seed: int) -> dict:
        model = make(name, seed=0, **overrides)
        run_steps(model, 3, seed=noise_seed)
        return model.state_dict()

    a, b, c = train(0), train(0), train(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_minibatch_std_splits_like_one_batch_and_sees_collapse() -> None:
    layer = MinibatchStd()
    h = torch.randn(8, 3, 5, 5)
    whole = layer(h)
    assert whole.shape == (8, 4, 5, 5)
    torch.testing.assert_close(torch.cat([layer(h[:4]), layer(h[4:])]), whole)
    same = layer(torch.ones(8, 6))[:, -1]
    assert same.abs().max() < 1e-3


# -- real data ----------------------------------------------------------------------------------
def load_mnist(mnist_dir: Path, n: int) -> torch.Tensor:
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8, offset=16)
    return torch.from_numpy(raw[: n * 784].reshape(n, 1, 28, 28).astype(np.float32) / 255.0)


def test_seed_gan_learns_to_tell_real_mnist_from_fakes(mnist_dir: Path) -> None:
    """150 steps of the seed GAN on 2000 digits. The bounds come from the correct code over 5 seeds
    (model, data order and noise seeds 0-4; this test uses 0) against deliberately broken copies: G's or
    D's loss negated, D's real and fake swapped, G's or D's learning rate 0."""
    images = load_mnist(mnist_dir, 2500)
    model = make("seed", seed=0)
    opts = model.configure_optimizers(TrainSettings(lr=2e-4))
    nets = model.networks()
    bs = 32
    order = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(bs, dtype=torch.long)
    history = []
    for i in range(150):
        idx = order[(i * bs) % (2000 - bs) :][:bs]
        logs = step(model, nets, opts, images[idx], y, ctx(i))
        history.append((float(logs["d_real"]), float(logs["d_fake"])))
    d_real, d_fake = np.mean(history[-50:], axis=0)
    assert d_real > d_fake, (d_real, d_fake)  # measured 0.018-0.052 apart; broken: 0 or 1 apart, or reversed
    heldout = images[2000:]
    samples = model.sample(256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.eval()
        real = torch.sigmoid(model.discriminator(heldout * 2 - 1)).mean()
        noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        fake = torch.sigmoid(model.discriminator(noise * 2 - 1)).mean()
        of_samples = torch.sigmoid(model.discriminator(samples * 2 - 1)).mean()
    # held-out check with the trained D: unseen digits score well above uniform noise images
    # (measured 0.14-0.22 above; with G's rate 0 D beats noise by 0.77, so this alone proves little)
    assert real > fake + 0.1, (real, fake)
    # the game is near its equilibrium: D scores G's samples about as it scores unseen digits
    # (measured 0.01-0.10 apart; every breakage above: 0.39-1.0 apart)
    assert abs(float(real - of_samples)) < 0.25, (real, of_samples)
    # and G moved away from noise: its samples are darker on average, like digits (mean ~0.13)
    # (measured 0.18-0.25; untrained 0.50, broken 0.47-0.75)
    assert float(samples.mean()) < 0.35, float(samples.mean())
    # with the ink where digits have it: the mean sample correlates with the mean held-out digit
    # (measured 0.61-0.67 over the pixels; untrained -0.03-0.06, broken -0.21-0.05)
    corr = np.corrcoef(samples.mean(0).flatten().numpy(), heldout.mean(0).flatten().numpy())[0, 1]
    assert corr > 0.4, corr


def test_nonfinite_discriminator_loss_is_skipped_through_optimize() -> None:
    model = make("dcgan", width=8)
    opts = model.configure_optimizers(TrainSettings(lr=2e-4))
    d0 = clone_params(model.discriminator)
    x, y = batch()
    x[0, 0, 0, 0] = float("nan")
    c = StepContext(
        step=0,
        noise=StepNoise(torch.Generator().manual_seed(0)),
        settings=TrainSettings(lr=2e-4, grad_clip=1.0, skip_nonfinite=True),
    )
    logs = step(model, model.networks(), opts, x, y, c)
    assert float(logs["applied"]) == 0.0
    assert unchanged(d0, model.discriminator) == {n for n, _ in model.discriminator.named_parameters()}


# -- through the trainer --------------------------------------------------------------------------
# 20x the preset's rate: in 3 steps (15 critic updates) the weights move far beyond the tolerance
MP_LR = 2e-3
MP_BETAS = (0.0, 0.9)  # the wgan-gp preset's Adam betas


def _train_args(out: Path, mnist_dir: Path) -> list[str]:
    return [
        "train",
        "gan",
        "--preset",
        "wgan-gp",
        "--data-dir",
        str(mnist_dir),
        "--split",
        "test",
        "--batch-size",
        "16",
        "--max-steps",
        "3",
        "--lr",
        str(MP_LR),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "model.width=8",
        "--set",
        "model.batchnorm=false",
        "--set",
        "model.conditional=true",
        "--set",
        "model.minibatch_std=true",
    ]


def test_two_gloo_processes_match_one_process(mnist_dir: Path, tmp_path: Path) -> None:
    """DDP-wrapped G and D, the critic's double backward, minibatch std in groups of 4, projection D:
    two processes of batch 8 end where one process of batch 16 does (BN off: its statistics are local)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from genlab.cli import main
    from genlab.config import RunConfig
    from genlab.seeding import set_seed

    assert main(_train_args(tmp_path / "one", mnist_dir)) == 0  # in this process: one start-up fewer
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29541",
            "-m",
            "genlab",
            *_train_args(tmp_path / "two", mnist_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    # the initial weights, built as the trainer builds them: set_seed, then build_model
    run = RunConfig.load(tmp_path / "one" / "config.json")
    assert run.train.lr == MP_LR and tuple(run.model.betas) == MP_BETAS and run.model.d_steps == 5
    set_seed(run.train.seed)
    init = build_model("gan", run.model).state_dict()
    # Measured (seeds 0-3): one and two processes differ by at most 4.5e-6 in any weight (8.4e-6 relative
    # to the movement's norm), while the typical weight moved (median over each network) by 2.8e-3 (EMA),
    # 3.3e-3 (G) and 2.6e-2 (D). (Adam can turn a round-off-sized gradient into an lr-sized step of either
    # sign: at lr 1e-3 over 6 steps a few hundred of G's 93k weights drifted apart by up to 2.7e-3;
    # over these 3 steps none has.)
    atol = 1e-4
    for net in ("generator.", "generator_ema.", "discriminator."):
        keys = [k for k in one if k.startswith(net)]
        moved = torch.cat([(one[k] - init[k]).flatten() for k in keys]).abs()
        apart = torch.cat([(one[k] - two[k]).flatten() for k in keys])
        # the weights moved far beyond the tolerance ...
        assert float(moved.median()) > 10 * atol, (net, float(moved.median()))
        # ... and the rebuilt init is the run's start: Adam with beta1 = 0 moves a weight by at most
        # lr * sqrt((1 - b2^t) / (1 - b2)) at its t-th step, 4.03 lr over G's 3 (the EMA stays in their
        # hull), 33.2 lr over D's 15 (measured: 0.9996, 0.88 and 0.79 of these); a wrong init (N(0, 0.02)
        # weights) would be off by ~0.1 somewhere
        n_updates = 15 if net == "discriminator." else 3
        bound = MP_LR * sum(math.sqrt((1 - MP_BETAS[1] ** t) / (1 - MP_BETAS[1])) for t in range(1, n_updates + 1))
        assert float(moved.max()) <= bound * 1.001, (net, float(moved.max()), bound)
        # one process and two agree: in every weight, and as a whole (relative to the movement)
        assert float(apart.norm() / moved.norm()) < 1e-4, (net, float(apart.norm() / moved.norm()))
        for k in keys:
            torch.testing.assert_close(two[k], one[k], atol=atol, rtol=0, msg=k)
    for run in ("one", "two"):
        assert (tmp_path / run / "progress" / "step-000003.png").is_file()
        assert {"diversity", "warnings"} <= set(json.loads((tmp_path / run / "summary.json").read_text()))
