"""The architecture's proof: a model family defined in this file alone trains, resumes, samples,
explores, reports its likelihood and is evaluated through the public CLI, with no change to genlab.

The family is a mixture of K factorised Bernoullis, p(x) = sum_k pi_k prod_p s_kp^x_p (1 - s_kp)^(1 - x_p),
whose latent is the one-hot component: it has a latent space (decode z = sum_k z_k s_k), an encoder
(the responsibilities p(k | x)) and an exact likelihood, so every capability is exercised.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from genlab.cli import main
from genlab.config import require
from genlab.models import register_family
from genlab.models.base import (
    EncoderModel,
    GenerativeModel,
    LatentModel,
    LikelihoodModel,
    Preset,
    StepOutput,
    adam,
    optimize,
)


@dataclass
class MixtureConfig:
    components: int = 10  # K
    image_shape: tuple = (1, 28, 28)

    def validate(self) -> None:
        require(
            isinstance(self.components, int) and self.components >= 2,
            f"model.components must be an integer >= 2, got {self.components}",
        )


class BernoulliMixture(GenerativeModel):
    family = "bernmix"
    config_class = MixtureConfig
    likelihood_name = "mixture of factorised Bernoullis (exact)"
    likelihood_data = "binary"

    def __init__(self, config: MixtureConfig):
        super().__init__(config)
        pixels = math.prod(config.image_shape)
        self.logits = nn.Parameter(torch.randn(config.components, pixels) * 0.1)  # (K, P)
        self.mix_logits = nn.Parameter(torch.zeros(config.components))  # (K,)

    def networks(self) -> dict[str, nn.Module]:
        return {"mixture": self}

    def configure_optimizers(self, settings):
        return {"mixture": adam(self.parameters(), lr=settings.lr)}

    def log_joint(self, x: Tensor) -> Tensor:
        """log pi_k + log p(x | k), (B, K)."""
        flat = x.flatten(1)
        log_px_k = -F.binary_cross_entropy_with_logits(
            self.logits[None].expand(flat.shape[0], -1, -1),
            flat[:, None].expand(-1, self.logits.shape[0], -1),
            reduction="none",
        ).sum(-1)
        return torch.log_softmax(self.mix_logits, 0) + log_px_k

    def forward(self, x: Tensor) -> Tensor:
        return -torch.logsumexp(self.log_joint(x), 1).mean()

    def train_step(self, nets, optimizers, x, y, ctx) -> StepOutput:
        loss = nets["mixture"](x)
        applied = optimize(loss, optimizers["mixture"], None, ctx.settings, ctx.step)
        return StepOutput(loss=loss.detach(), logs={"loss": loss.detach()}, applied=applied)

    # LatentModel
    @property
    def latent_dim(self) -> int:
        return self.config.components

    def sample_latent(self, n, generator=None) -> Tensor:
        k = torch.multinomial(torch.softmax(self.mix_logits.detach(), 0), n, replacement=True, generator=generator)
        return F.one_hot(k, self.config.components).float()

    def decode(self, z, labels=None) -> Tensor:
        return (z.float() @ torch.sigmoid(self.logits)).view(-1, *self.config.image_shape)

    @torch.inference_mode()
    def sample(self, n, labels=None, generator=None) -> Tensor:
        return self.decode(self.sample_latent(n, generator))

    # EncoderModel
    def encode_latent(self, x, labels=None) -> Tensor:
        return torch.softmax(self.log_joint(x), 1)

    # LikelihoodModel
    def likelihood_report(self, x, labels=None, *, k, generator=None, chunk=None) -> dict[str, Tensor]:
        exact = torch.logsumexp(self.log_joint(x), 1)
        return {"bound": exact, "elbo": exact}

    def likelihood_summary(self, x, labels=None) -> dict:
        return {}


PRESETS = {
    "small": Preset(
        "small", "a 10-component mixture of Bernoullis", MixtureConfig(), {"epochs": 1, "batch_size": 64, "lr": 0.05}
    )
}
CLI_FLAGS = {"--components": ("components", int, "mixture components")}
MODEL = BernoulliMixture


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    """Register this module as the family ``bernmix`` for the test only."""
    from genlab import models

    monkeypatch.setattr(models, "FAMILIES", dict(models.FAMILIES))
    register_family("bernmix", __name__)
    yield


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_the_family_has_every_capability() -> None:
    model = BernoulliMixture(MixtureConfig())
    assert isinstance(model, LatentModel) and isinstance(model, EncoderModel)
    assert isinstance(model, LikelihoodModel)
    assert sys.modules[__name__].MODEL is BernoulliMixture


def test_train_resume_sample_explore_nll_evaluate(mnist_dir: Path, tmp_path: Path, capsys) -> None:
    data = ["--dataset", "mnist", "--data-dir", mnist_dir, "--split", "test"]
    out, whole = tmp_path / "run", tmp_path / "whole"
    # presets and flags come from the registry
    assert run_cli("presets") == 0 and "bernmix small" in capsys.readouterr().out
    assert (
        run_cli(
            "train",
            "bernmix",
            "--preset",
            "small",
            *data,
            "--components",
            "8",
            "--max-steps",
            "20",
            "--checkpoint-every",
            "10",
            "--log-every",
            "5",
            "--out",
            whole,
            "--quiet",
        )
        == 0
    )
    # the same run stopped at 10 steps, then resumed to 20: bit-identical weights
    assert (
        run_cli(
            "train",
            "bernmix",
            "--preset",
            "small",
            *data,
            "--components",
            "8",
            "--max-steps",
            "10",
            "--checkpoint-every",
            "10",
            "--log-every",
            "5",
            "--out",
            out,
            "--quiet",
        )
        == 0
    )
    assert run_cli("train", "--resume", out, "--max-steps", "20", "--quiet") == 0
    a, b = load_file(out / "model.safetensors"), load_file(whole / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["logits"].shape == (8, 784)
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "bernmix" and config["model"]["components"] == 8
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert losses[-1] < losses[0] - 50  # nats per image: the mixture learns the digits' ink
    for name in ("samples.png", "loss.png", "summary.json"):
        assert (out / name).is_file(), name

    assert run_cli("sample", out, "-n", "16", "--out", tmp_path / "s.npy", "--quiet") == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (16, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1

    for what in ("interpolate", "reconstruct", "traverse", "manifold", "scatter"):
        png = tmp_path / f"{what}.png"
        assert run_cli("explore", out, "--what", what, *data[2:4], "--out", png, "--quiet", "--n", "3") == 0, what
        assert png.stat().st_size > 100

    assert run_cli("nll", out, "--k", "1", "-n", "200", *data[2:4], "--quiet") == 0
    nll = json.loads((out / "nll.json").read_text())
    assert 50 < nll["iwae_nll_nats"] < 400  # an exact likelihood, in nats per binarised image
    assert nll["elbo_nats"] == -nll["iwae_nll_nats"]  # the family reports its exact log p(x) as both

    assert (
        run_cli("evaluate", out, "-n", "500", "--metrics", "fid,kid", *data[2:4], "--out", tmp_path / "ev", "--quiet")
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "fid" in json.dumps(metrics)


def test_a_flag_of_another_family_is_refused(mnist_dir: Path, tmp_path: Path, capsys) -> None:
    code = run_cli(
        "train",
        "bernmix",
        "--preset",
        "small",
        "--data-dir",
        mnist_dir,
        "--split",
        "test",
        "--loss",
        "hinge",
        "--out",
        tmp_path / "x",
    )
    err = capsys.readouterr().err
    assert code == 2 and "--loss does not apply to bernmix models" in err and not (tmp_path / "x").exists()
