"""Data-parallel training with plain SGD: 2 torchrun gloo processes == 1 process with the same global batch.

The other multi-process tests (test_distributed.py, test_gan.py) train with Adam, whose update
lr * m / sqrt(v) does not change when every gradient is scaled by the same factor: gradients
*summed* over the processes instead of averaged would pass them. Plain SGD (no momentum) steps by
lr * gradient, so a gradient twice too large is an update twice too large. The family below is
defined in this file, as tests/test_new_family.py does it, and the torchrun processes register it
through a small launcher script before calling genlab's CLI.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from genlab.cli import main
from genlab.config import RunConfig, require
from genlab.models import build_model, register_family
from genlab.models.base import GenerativeModel, Preset, StepOutput, optimize
from genlab.seeding import set_seed

FAMILY = "sgdtiny"
TESTS = Path(__file__).resolve().parent
SRC = str(TESTS.parent / "src")
PORT = "29571"


@dataclass
class TinyConfig:
    hidden: int = 16
    noise: float = 0.1  # std of the noise added to the code: draws from the step's StepNoise
    image_shape: tuple = (1, 28, 28)

    def validate(self) -> None:
        require(isinstance(self.hidden, int) and self.hidden >= 1, f"model.hidden must be >= 1, got {self.hidden}")
        require(self.noise >= 0, f"model.noise must be >= 0, got {self.noise}")


class TinyAutoencoder(GenerativeModel):
    """784 -> tanh(16) + noise -> 784 Bernoulli logits, trained by SGD without momentum.

    The loss is a mean over the (local) batch, as every family's is: DDP's averaged gradient is then
    the one-process gradient of the global batch, and a sum over processes would be twice it.
    """

    family = FAMILY
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        pixels = math.prod(config.image_shape)
        self.encoder = nn.Linear(pixels, config.hidden)
        self.decoder = nn.Linear(config.hidden, pixels)

    def networks(self) -> dict[str, nn.Module]:
        return {"autoencoder": self}

    def configure_optimizers(self, settings):
        return {"autoencoder": torch.optim.SGD(self.parameters(), lr=settings.lr, momentum=0.0)}

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        flat = x.flatten(1)
        z = torch.tanh(self.encoder(flat)) + noise
        return F.binary_cross_entropy_with_logits(self.decoder(z), flat, reduction="none").sum(1).mean()

    def train_step(self, nets, optimizers, x, y, ctx) -> StepOutput:
        noise = self.config.noise * ctx.noise.randn(x.shape[0], self.config.hidden, device=x.device)
        loss = nets["autoencoder"](x, noise)
        applied = optimize(loss, optimizers["autoencoder"], None, ctx.settings, ctx.step)
        return StepOutput(loss=loss.detach(), logs={"loss": loss.detach()}, applied=applied)

    @torch.inference_mode()
    def sample(self, n, labels=None, generator=None) -> Tensor:
        z = torch.randn(n, self.config.hidden, generator=generator)
        return torch.sigmoid(self.decoder(z)).view(-1, *self.config.image_shape)


PRESETS = {
    "small": Preset("small", "a 16-unit autoencoder trained by SGD", TinyConfig(), {"epochs": 1, "batch_size": 16})
}
CLI_FLAGS: dict = {}
MODEL = TinyAutoencoder

LAUNCHER = f"""\
import sys

sys.path.insert(0, {str(TESTS)!r})
import {Path(__file__).stem}  # noqa: F401  (the family's module must import here, as it does in pytest)
from genlab.cli import main
from genlab.models import register_family

register_family({FAMILY!r}, {Path(__file__).stem!r})
sys.exit(main(sys.argv[1:]))
"""

STEPS = 40
LR = 5e-3
# One process against two: the gradients differ only in the order of the sums (the all-reduce adds
# the two half-batch means), float32 round-off of ~1e-7 relative, which SGD does not amplify.
# Measured after 40 steps at lr 5e-3: at most 6e-8 between the runs (9e-8 at lr 1e-2), while the
# weights moved from their initial values by a median of 1.3e-2 (max 0.12), and one process at twice
# the rate ended at least 0.044 away from the two-process run in every tensor (max 0.092).
ATOL = 1e-6


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    """Register this module as the family ``sgdtiny`` for the test only."""
    from genlab import models

    monkeypatch.setattr(models, "FAMILIES", dict(models.FAMILIES))
    register_family(FAMILY, __name__)


def _args(out: Path, mnist_dir: Path, lr: float = LR) -> list[str]:
    return [
        "train",
        FAMILY,
        "--preset",
        "small",
        "--dataset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--split",
        "test",
        "--batch-size",
        "16",
        "--lr",
        str(lr),
        "--max-steps",
        str(STEPS),
        "--precision",
        "fp32",
        "--out",
        str(out),
        "--quiet",
    ]


def test_two_gloo_processes_match_one_process_under_sgd(mnist_dir: Path, tmp_path: Path) -> None:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", PORT]
    done = subprocess.run(
        [*torchrun, str(launcher), *_args(tmp_path / "two", mnist_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(_args(tmp_path / "one", mnist_dir)) == 0  # in this process: one start-up fewer
    two = load_file(tmp_path / "two" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    assert one.keys() == two.keys() == {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}

    # the initial weights, built as the trainer builds them (set_seed, then build_model) ...
    run = RunConfig.load(tmp_path / "one" / "config.json")
    assert run.family == FAMILY and run.train.seed == 0
    set_seed(run.train.seed)
    init = build_model(FAMILY, run.model).state_dict()
    # ... are the run's starting point: the encoder weights of the pixels that are blank in every
    # image seen get no gradient, and SGD without momentum or weight decay leaves them bit-identical
    # (a wrong rebuild would be off by ~0.02, nn.Linear's initial scale, in every weight)
    blank = one["encoder.weight"] == init["encoder.weight"]
    assert 0.05 < float(blank.float().mean()) < 0.5, float(blank.float().mean())  # measured 0.23
    moved = torch.cat([(one[k] - init[k]).flatten() for k in one]).abs()
    assert float(moved.median()) > 1000 * ATOL, float(moved.median())  # measured 1.3e-2

    # two processes of 8 end where one process of 16 does ...
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=ATOL, rtol=0, msg=k)

    # ... and the comparison would see a gradient summed over the 2 processes instead of averaged:
    # that doubles every SGD update, exactly what one process with twice the rate does
    assert main(_args(tmp_path / "double", mnist_dir, lr=2 * LR)) == 0
    double = load_file(tmp_path / "double" / "model.safetensors")
    for k in one:  # in every tensor: the factor 2 is in every weight's update
        gap = float((double[k] - two[k]).abs().max())
        assert gap > 1000 * ATOL, (k, gap)  # measured >= 0.044
