"""Likelihood evaluation: the IWAE bound on a model with a known marginal, and on a real VAE."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genlab.cli import main
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.models.vae import VAEConfig, kl_divergence, reparameterize
from genlab.nll import binarize_images, elbo, evaluate_vae, importance_weighted_bound


class PPCA(torch.nn.Module):
    """Probabilistic PCA: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_p), so p(x) = N(b, W W^T + s^2 I).

    W has orthogonal columns, so the exact posterior N(M^-1 W^T (x - b), s^2 M^-1) with
    M = W^T W + s^2 I is diagonal and fits the VAE's encoder form. ``shift`` (in posterior
    standard deviations) and ``var_scale`` make q differ from it by a known amount.
    """

    def __init__(self, p: int = 6, d: int = 2, s: float = 0.5, shift: float = 0.0, var_scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
        self.W = q[:, :d] * torch.linspace(2.0, 1.0, d, dtype=torch.float64)  # orthogonal columns
        self.b = torch.randn(p, generator=g, dtype=torch.float64)
        self.s2 = s * s
        self.shift, self.var_scale = shift, var_scale
        self.m_diag = (self.W * self.W).sum(0) + self.s2  # M = W^T W + s^2 I is diagonal

    def exact_posterior(self, x):
        mean = (x - self.b) @ self.W / self.m_diag
        return mean, torch.log(self.s2 / self.m_diag).expand_as(mean)

    def encode(self, x, y=None):
        mean, log_var = self.exact_posterior(x)
        return mean + self.shift * (0.5 * log_var).exp(), log_var + math.log(self.var_scale)

    def log_likelihood(self, x, z, y=None):  # z (S, B, d) -> (S, B)
        mean = z @ self.W.T + self.b
        return (-0.5 * (x - mean).pow(2).sum(-1) / self.s2
                - 0.5 * x.shape[-1] * math.log(2 * math.pi * self.s2))

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.s2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + math.sqrt(self.s2) * torch.randn(n, len(self.b), generator=g,
                                                                         dtype=torch.float64)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_iwae_with_the_exact_posterior_is_exact_for_every_k():
    # With q = p(z|x) every weight p(x,z)/q(z|x) equals p(x): the estimate is exact, whatever
    # k and however the draws are chunked (k = 10 in chunks of 3 checks the running logsumexp).
    model = PPCA()
    x = model.sample_x(50)
    exact = model.log_marginal(x)
    for k, chunk in [(1, None), (10, 3), (64, 64)]:
        est = importance_weighted_bound(model, x, k=k, chunk=chunk, batch_size=16, generator=_gen())
        assert torch.allclose(est, exact, atol=1e-9), (k, (est - exact).abs().max())


def test_iwae_is_a_lower_bound_that_tightens_to_the_exact_marginal():
    model = PPCA(p=12, d=8, shift=0.5)  # q's mean off the posterior's by half a s.d. in 8 dimensions
    x = model.sample_x(300)
    exact = model.log_marginal(x)
    gaps = {}
    for k in (1, 100, 5000):
        gap = exact - importance_weighted_bound(model, x, k=k, batch_size=300, chunk=1000, generator=_gen(k))
        sem = float(gap.std() / math.sqrt(len(gap)))
        assert float(gap.mean()) > -3 * sem - 1e-6, f"k={k}: the estimate exceeds log p(x) on average"
        gaps[k] = float(gap.mean())
    assert gaps[1] > gaps[100] > gaps[5000] >= -1e-3, gaps
    assert gaps[1] > 0.1 and gaps[5000] < 0.01, gaps


def test_elbo_is_log_marginal_minus_kl_to_the_true_posterior():
    # ELBO(x) = log p(x) - KL(q(z|x) || p(z|x)); both Gaussians here, so the KL is closed form.
    model = PPCA(shift=0.5, var_scale=1.8)
    x = model.sample_x(100)
    mq, lq = model.encode(x)
    mp, lp = model.exact_posterior(x)
    kl = 0.5 * (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1).sum(-1)
    est = elbo(model, x, k=500, generator=_gen())
    assert torch.allclose(est.mean(), (model.log_marginal(x) - kl).mean(), atol=0.02)


def _vae(**cfg):
    torch.manual_seed(0)
    return build_model("vae", VAEConfig(hidden=(32,), latent_dim=3, **cfg)).eval()


@pytest.mark.parametrize("likelihood,reduction", [("bernoulli", "sum"), ("gaussian", "sum"),
                                                  ("mse", "sum"), ("mse", "mean")])
def test_vae_log_likelihood_is_the_density_the_loss_is_the_elbo_of(likelihood, reduction):
    model = _vae(likelihood=likelihood, recon_reduction=reduction)
    x = torch.rand(4, 1, 28, 28)
    z = torch.randn(5, 4, 3)
    ll = model.log_likelihood(x, z)
    assert ll.shape == (5, 4)
    with torch.no_grad():
        loss = model.reconstruction_nll(x, model.decode_logits(z[2]))
    p = 784
    if likelihood == "mse":  # sum: sigma^2 = 1/2; mean: the loss is the sum over P = sigma^2 of P/2
        var = 0.5 if reduction == "sum" else p / 2
        assert model.pixel_variance == var
        expected = -(loss * (1 if reduction == "sum" else p) / (2 * var) + 0.5 * p * math.log(2 * math.pi * var))
    else:
        expected = -loss
    assert torch.allclose(ll[2], expected, rtol=1e-5)


def test_conditional_model_needs_labels_and_uses_them():
    model = _vae(conditional=True)
    x = binarize_images(torch.rand(6, 1, 28, 28))
    with pytest.raises(GenlabError, match="labels"):
        importance_weighted_bound(model, x, k=4)
    a = importance_weighted_bound(model, x, torch.zeros(6, dtype=torch.long), k=4, generator=_gen())
    b = importance_weighted_bound(model, x, torch.full((6,), 7), k=4, generator=_gen())
    assert not torch.allclose(a, b)


def test_binarisation_is_fixed_by_the_seed():
    x = torch.rand(3, 1, 28, 28)
    a, b = binarize_images(x, seed=3), binarize_images((x * 255).round().to(torch.uint8), seed=3)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert (a != b).float().mean() < 0.01  # same draws; only the uint8 rounding can flip a pixel
    assert torch.equal(a, binarize_images(x, seed=3)) and not torch.equal(a, binarize_images(x, seed=4))


# -- a real (tiny) trained VAE ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_run(mnist_dir, tmp_path_factory) -> Path:
    """A run directory of the mlp preset after 40 steps on MNIST, written without the CLI (fast).

    (test_explore trains through the CLI; here the loader and evaluation are what is tested.)
    """
    from genlab.checkpoint import MODEL_FILE, save_tensors
    from genlab.config import DataConfig, RunConfig, TrainConfig
    from genlab.data import load_dataset
    from genlab.models import StepNoise, TrainSettings, get_preset
    from genlab.models.base import StepContext

    out = tmp_path_factory.mktemp("runs") / "mlp"
    out.mkdir()
    run = RunConfig("vae", "mlp", get_preset("vae", "mlp").model,
                    DataConfig("mnist", "test", str(mnist_dir)), TrainConfig(max_steps=40))
    torch.manual_seed(0)
    model = build_model("vae", run.model)
    x = load_dataset("mnist", "test", data_dir=mnist_dir).images[:40 * 128].float() / 255
    settings = TrainSettings(lr=1e-3)
    opts = model.configure_optimizers(settings)
    for step in range(40):
        ctx = StepContext(step, StepNoise(torch.Generator().manual_seed(step)), settings)
        model.train_step(model.networks(), opts, x[step * 128 : (step + 1) * 128], torch.zeros(128, dtype=torch.long), ctx)
    run.save(out / "config.json")
    save_tensors(out / MODEL_FILE, model.state_dict())
    return out


def test_bound_rises_with_k_and_elbo_is_below_it_on_a_trained_vae(mlp_run, mnist_dir):
    from genlab.checkpoint import load_run
    from genlab.data import load_dataset

    model, _ = load_run(mlp_run)
    x = binarize_images(load_dataset("mnist", "test", data_dir=mnist_dir).images[:100])
    means = [float(importance_weighted_bound(model, x, k=k, generator=_gen()).mean()) for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2], means
    assert float(elbo(model, x, k=10, generator=_gen()).mean()) < means[2]


def test_evaluate_vae_and_the_nll_command(mlp_run, mnist_dir, capsys):
    res = evaluate_vae(mlp_run, k=20, n_images=200, data_dir=str(mnist_dir))
    assert {"iwae_nll_nats", "elbo_nats", "k", "n_images", "active_units", "kl_per_dim", "likelihood",
            "binarized"} <= set(res)
    assert (res["k"], res["n_images"], res["likelihood"], res["binarized"]) == (20, 200, "bernoulli", True)
    assert len(res["kl_per_dim"]) == 20 and 0 <= res["active_units"] <= 20
    assert 50 < res["iwae_nll_nats"] < -res["elbo_nats"] < 800
    assert main(["nll", str(mlp_run), "--k", "20", "-n", "200"]) == 0
    saved = json.loads((mlp_run / "nll.json").read_text())
    assert saved["iwae_nll_nats"] == res["iwae_nll_nats"], "same seed, same figure"
    assert "IWAE NLL (k=20)" in capsys.readouterr().out


def test_nll_refuses_a_run_of_another_family(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"family": "gan"}))
    assert main(["nll", str(tmp_path)]) == 2
    assert f"genlab nll works on VAE runs; {tmp_path} is a gan" in capsys.readouterr().err
    with pytest.raises(GenlabError, match=r"VAE runs; .* is a gan"):
        evaluate_vae(tmp_path)


# -- training on the IWAE bound (model.iw_samples) ------------------------------------------------
def test_iwae_training_loss_is_minus_the_bound_the_evaluation_computes(mlp_run, mnist_dir):
    """The loss with eps of shape (k, B, D) is -mean L_k, the very figure `genlab nll` reports."""
    from genlab.checkpoint import load_run
    from genlab.data import load_dataset

    model, _ = load_run(mlp_run)
    x = binarize_images(load_dataset("mnist", "test", data_dir=mnist_dir).images[:50])
    k, d = 64, model.config.latent_dim
    eps = torch.randn(k, 50, d, generator=_gen(3))
    with torch.no_grad():
        loss = float(model(x, None, eps)["loss"])
    bound = importance_weighted_bound(model, x, k=k, batch_size=50, chunk=k, generator=_gen(3))
    assert loss == pytest.approx(-float(bound.mean()), rel=1e-5)
    with torch.no_grad():  # the ELBO loss on the first draw of the same noise is higher (a looser bound)
        elbo_losses = [float(model(x, None, eps[i])["loss"]) for i in range(k)]
    assert loss < sum(elbo_losses) / k - 1.0, (loss, sum(elbo_losses) / k)


def test_iwae_preset_trains_through_the_cli_and_refuses_a_kl_weight(mnist_dir, tmp_path, capsys):
    out = tmp_path / "iwae"
    args = ["train", "vae", "--preset", "mlp", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--split", "test",
            "--max-steps", "30", "--log-every", "10", "--out", str(out), "--quiet", "--set", "model.iw_samples=5",
            "--set", "model.binarize=true"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30] and lines[-1]["loss"] < lines[0]["loss"]
    assert json.loads((out / "config.json").read_text())["model"]["iw_samples"] == 5
    assert main([*args[:-4], "--set", "model.iw_samples=5", "--set", "model.beta=4", "--overwrite"]) == 2
    assert "iw_samples" in capsys.readouterr().err
