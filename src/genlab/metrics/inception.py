"""The FID Inception-v3 (pool3, 2048-d) in plain torch, loadable from pytorch-fid's weights.

This is the network of pytorch-fid (``fid_inception_v3``), which reproduces TensorFlow's
FID Inception graph (Heusel et al. 2017): torchvision's Inception3 with the FIDInceptionA/C/E_1/
E_2 patches (average pools that exclude padding; max pool in the last block). Parameter
names are torchvision's (``Conv2d_1a_3x3.conv.weight``, ``Mixed_7c.branch_pool.bn.running_var``,
...) so that ``pt_inception-2015-12-05-6726825d.pth`` loads as is; its ``fc.*`` classifier
weights are ignored because FID uses the pool3 features only.

genlab cannot download the weights (and does not depend on torchvision). Get the file from
pytorch-fid's releases and pass its path to :func:`load_fid_inception`. It is read with
``torch.load(weights_only=True)``, which refuses to run code, or as a ``.safetensors`` file.

Inputs are (N, C, H, W) in [0, 1] with C 1 or 3 and any H, W: grayscale is repeated to 3
channels, every image is resized to 299x299 (bilinear, align_corners=False, as pytorch-fid's
``resize_input``) and scaled from [0, 1] to [-1, 1]. FID values from this network are
comparable with pytorch-fid's; on MNIST-like data they measure ImageNet features, so prefer
genlab's classifier features for judging digits or clothes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import CheckpointError
from genlab.metrics.validate import check_images

FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_tf(x: Tensor) -> Tensor:
    # TensorFlow's average pool does not count the zero padding (FID patch).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """InceptionE; ``pool="avg"`` is FIDInceptionE_1 (Mixed_7b), ``"max"`` FIDInceptionE_2 (Mixed_7c)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            pooled = _avg_pool_tf(x)
        else:
            # The FID graph max-pools here (likely a bug in the original, kept for comparability).
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to the final average pool: (N, 1 or 3, H, W) in [0, 1] -> (N, 2048)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)  # grayscale -> RGB
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # any H, W
        x = 2 * x - 1  # (N, 3, 299, 299) in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)


# Keys present in pytorch-fid's file that this feature extractor does not use.
_IGNORED_KEYS = ("fc.weight", "fc.bias")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read Inception weights {path}: {e}") from e
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # unpickling errors come in many types; all mean "not usable"
        raise CheckpointError(
            f"cannot read Inception weights {path} as a plain state dict (torch.load with weights_only=True): {e}"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def load_fid_inception(path: str | Path, *, device: str = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load pytorch-fid's weights from ``path``.

    ``path`` is ``pt_inception-2015-12-05-6726825d.pth`` (read with
    ``torch.load(weights_only=True)``) or a ``.safetensors`` conversion of it. Keys must match
    exactly (``fc.*`` and ``*.num_batches_tracked`` may be present or absent); otherwise a
    :class:`~genlab.errors.CheckpointError` lists what is missing, unexpected or misshapen.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Inception weights not found: {path}. Download pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth and pass its path."
        )
    state = {k: v for k, v in _read_state_dict(path).items() if k not in _IGNORED_KEYS}
    model = FIDInceptionV3()
    expected = model.state_dict()

    def significant(keys: set[str]) -> set[str]:
        return {k for k in keys if not k.endswith("num_batches_tracked")}

    missing = sorted(significant(set(expected)) - set(state))
    unexpected = sorted(significant(set(state)) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in significant(set(expected)) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} is not pytorch-fid's FID Inception state dict: "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} with the wrong shape (e.g. {wrong[:3]})"
        )
    for k, v in expected.items():  # old checkpoints predate the BatchNorm counter
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()


@torch.no_grad()
def inception_features(model: FIDInceptionV3, images: Any, *, batch_size: int = 50, device: str = "cpu") -> np.ndarray:
    """Pool3 features (N, 2048) float64 of images (N, C, H, W), C 1 or 3, any size, in [0, 1] or uint8."""
    x = check_images(images, "images", metric="inception_features", size=None, channels=(1, 3))
    model = model.to(device).eval()
    out = [model(torch.from_numpy(x[i : i + batch_size].copy()).to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()
