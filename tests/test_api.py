"""The Python API (genlab.train / load / save / encode / decode), config files, --resume latest and
data paths: real short runs on the MNIST test split, through the API and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.errors import ConfigError, GenlabError

TINY = {"split": "test", "max_steps": 4, "batch_size": 32, "log_every": 2, "quiet": True}


def cli_train(mnist_dir: Path, *extra: str) -> int:
    argv = ["train", "vae", "--data-dir", str(mnist_dir), "--split", "test", "--max-steps", "4"]
    return main([*argv, "--batch-size", "32", "--quiet", *extra])


@pytest.fixture(scope="module")
def vae_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "vae"
    result = genlab.train("vae", preset="seed", data_dir=mnist_dir, out=out, latent_dim=3, **TINY)
    assert result.run_dir == out and result.steps == 4
    return out


@pytest.fixture(scope="module")
def gan_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "gan"
    genlab.train("gan", data_dir=mnist_dir, out=out, **TINY)
    return out


def test_import_genlab_is_light_and_exports_the_api():
    code = "import sys, genlab; assert 'torch' not in sys.modules; print(genlab.__all__); genlab.load; genlab.train"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'load'" in out and "'save'" in out
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        genlab.nope  # noqa: B018
    assert genlab.load.__doc__ and genlab.train.__doc__ and genlab.save.__doc__


def test_load_sample_encode_decode(vae_run):
    model = genlab.load(vae_run, device="cpu")
    assert not model.training and model.run_config.family == "vae"
    assert model.run_config.model.latent_dim == 3
    a = model.sample(8, generator=torch.Generator().manual_seed(1))
    b = model.sample(8, generator=torch.Generator().manual_seed(1))
    assert a.shape == (8, 1, 28, 28) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    z = genlab.encode(model, a)
    assert z.shape == (8, 3)
    assert genlab.decode(model, z).shape == (8, 1, 28, 28)


def test_gan_decodes_but_has_no_encoder(gan_run):
    model = genlab.load(gan_run, device="cpu")
    z = model.sample_latent(4, torch.Generator().manual_seed(0))
    assert genlab.decode(model, z).shape == (4, 1, 28, 28)
    with pytest.raises(GenlabError, match="no encoder"):
        genlab.encode(model, torch.zeros(4, 1, 28, 28))


@pytest.mark.parametrize("which", ["vae_run", "gan_run"])
def test_save_round_trips_the_run_folder_byte_for_byte(which, request, tmp_path):
    run = request.getfixturevalue(which)
    model = genlab.load(run, device="cpu")
    copy = genlab.save(model, tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir() if not p.name.startswith(".")) == ["config.json", "model.safetensors"]
    assert (copy / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    assert (copy / "config.json").read_bytes() == (run / "config.json").read_bytes()
    again = genlab.load(copy, device="cpu")
    g = torch.Generator().manual_seed(3)
    assert torch.equal(again.sample(4, generator=g), model.sample(4, generator=g.manual_seed(3)))
    with pytest.raises(GenlabError, match="--overwrite"):
        genlab.save(model, copy)
    genlab.save(again, copy, overwrite=True)
    assert (copy / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()


def test_save_of_a_model_built_in_python(tmp_path):
    from genlab.models import build_model, get_preset

    model = build_model("vae", get_preset("vae", "seed").model)
    genlab.save(model, tmp_path / "fresh")
    loaded = genlab.load(tmp_path / "fresh", device="cpu")
    assert loaded.run_config.preset == "custom"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_train_refuses_unknown_settings_and_resumes(vae_run, tmp_path, mnist_dir):
    with pytest.raises(ConfigError, match="unknown setting colour"):
        genlab.train("vae", data_dir=mnist_dir, out=tmp_path / "x", colour=1, **TINY)
    with pytest.raises(ConfigError, match="lr cannot change"):
        genlab.train(resume=vae_run, lr=0.1)
    run = tmp_path / "resumed"
    genlab.train("vae", data_dir=mnist_dir, out=run, **{**TINY, "max_steps": 2})
    result = genlab.train(resume=run, max_steps=4, quiet=True)
    assert result.steps == 4 and json.loads((run / "config.json").read_text())["train"]["max_steps"] == 4


# -- config files -------------------------------------------------------------------------------
def test_a_runs_own_config_is_accepted_back_and_flags_override_it(vae_run, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["train", "--config", str(vae_run / "config.json"), "--out", str(out), "--quiet"]) == 0
    assert (out / "config.json").read_text() == (vae_run / "config.json").read_text()  # the same run again
    assert (out / "model.safetensors").read_bytes() == (vae_run / "model.safetensors").read_bytes()
    out2 = tmp_path / "changed"
    argv = ["train", "vae", "--config", str(vae_run / "config.json"), "--out", str(out2), "--quiet"]
    assert main([*argv, "--max-steps", "2", "--latent-dim", "4", "--set", "train.lr=0.002"]) == 0
    saved, changed = (json.loads((d / "config.json").read_text()) for d in (vae_run, out2))
    assert changed["train"]["max_steps"] == 2 and changed["model"]["latent_dim"] == 4
    assert changed["train"]["lr"] == 0.002
    for section in ("model", "train", "data"):
        different = {k for k in saved[section] if saved[section][k] != changed[section][k]}
        assert different <= {"max_steps", "latent_dim", "lr"}, (section, different)


def _bad_configs(run: Path, tmp_path: Path) -> list[tuple[str, str]]:
    good = json.loads((run / "config.json").read_text())
    cases = []
    for name, edit, words in [
        ("types", lambda d: d["train"].update(lr="fast"), "train.lr must be float"),
        ("unknown", lambda d: d["model"].update(colour=1), "unknown key(s) colour"),
        ("top", lambda d: d.update(extra=1), "unknown key(s) extra"),
        ("range", lambda d: d["train"].update(batch_size=0), "batch_size"),
        ("list", lambda d: d.clear(), "missing key"),
    ]:
        d = json.loads(json.dumps(good))
        edit(d)
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
        cases.append((str(tmp_path / f"{name}.json"), words))
    (tmp_path / "notjson.json").write_text("{nope")
    cases += [(str(tmp_path / "notjson.json"), "not valid JSON"), (str(tmp_path / "absent.json"), "no such")]
    cases += [(str(tmp_path), "directory")]
    return cases


def test_bad_config_files_give_one_line_and_exit_2(vae_run, tmp_path, capsys):
    for path, words in _bad_configs(vae_run, tmp_path):
        assert main(["train", "--config", path, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("genlab: error:") and err.count("\n") == 1 and words in err, (path, err)
    for argv, words in [
        (["train", "gan", "--config", str(vae_run / "config.json")], "of a vae model, not gan"),
        (["train", "--config", str(vae_run / "config.json"), "--preset", "conv"], "--preset cannot"),
        (["train", "--config", str(vae_run / "config.json"), "--resume", str(vae_run)], "--config starts a new run"),
        (["train", "--config", str(vae_run / "config.json"), "--loss", "hinge"], "--loss does not apply to vae"),
    ]:
        assert main([*argv, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("genlab: error:") and err.count("\n") == 1 and words in err, (argv, err)
    assert not (tmp_path / "r").exists()


# -- runs/latest and --resume latest --------------------------------------------------------------
def test_runs_latest_follows_the_last_run_started_and_resume_latest_continues_it(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "latest"]) == 2  # nothing yet: one clear line (checked below too)
    assert cli_train(mnist_dir, "--out", "runs/a", "--max-steps", "2") == 0
    assert os.readlink("runs/latest") == "a"
    assert cli_train(mnist_dir, "--out", "runs/b", "--max-steps", "2") == 0
    assert os.readlink("runs/latest") == "b"
    assert cli_train(mnist_dir, "--out", "elsewhere/c") == 0  # not in ./runs: the link stays
    assert os.readlink("runs/latest") == "b" and not Path("elsewhere/latest").exists()
    assert main(["train", "--resume", "latest", "--max-steps", "4", "--quiet"]) == 0
    assert json.loads(Path("runs/b/summary.json").read_text())["steps"] == 4
    assert json.loads(Path("runs/a/summary.json").read_text())["steps"] == 2
    assert genlab.load("latest", device="cpu").run_config.train.max_steps == 4
    assert sorted(os.listdir("runs")) == ["a", "b", "latest"]  # no temporary link left behind
    # Without the link (runs made by an older genlab): the newest run there.
    os.unlink("runs/latest")
    os.utime("runs/a/config.json")
    assert main(["train", "--resume", "latest", "--max-steps", "3", "--quiet"]) == 0
    assert json.loads(Path("runs/a/summary.json").read_text())["steps"] == 3


def test_resume_latest_without_runs_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "latest"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlab: error: no run to resume") and err.count("\n") == 1, err


# -- data paths -----------------------------------------------------------------------------------
def test_relative_data_dir_is_resolved_from_the_current_directory_and_stored_absolute(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(mnist_dir, tmp_path)  # e.g. ../../work/shared/datasets/mnist
    assert cli_train(mnist_dir, "--out", "r", "--data-dir", relative) == 0
    assert json.loads(Path("r/config.json").read_text())["data"]["data_dir"] == str(mnist_dir)
    # The stored path works from any other directory: resume from elsewhere.
    monkeypatch.chdir(mnist_dir.anchor)
    assert main(["train", "--resume", str(tmp_path / "r"), "--max-steps", "6", "--quiet"]) == 0


def test_missing_data_says_where_it_looked_in_a_few_short_lines(tmp_path, monkeypatch, capsys, isolated_data_env):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "vae", "--data-dir", "../no/such/mnist", "--split", "test", "--out", "r"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("genlab: error: mnist test split not found"), err
    assert all(line.startswith("  ") for line in lines[1:]), err
    assert 3 <= len(lines) <= 16 and max(map(len, lines)) < 200, err
    assert f"\n    {tmp_path.parent / 'no/such/mnist'} (no such folder)\n" in err  # absolute, from here
    assert "--data-dir" in err and "`genlab datasets`" in err and "network disabled" in err
