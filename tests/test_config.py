"""config.py: whatever a config.json holds, loading it gives a RunConfig or one ConfigError, never a crash."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab.config import DataConfig, RunConfig, TrainConfig, config_differences
from genlab.errors import ConfigError
from genlab.models import get_preset
from genlab.models.base import config_from_dict

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def base(family: str = "vae", preset: str = "seed") -> dict:
    p = get_preset(family, preset)
    return RunConfig(family, preset, p.model, DataConfig(), TrainConfig(**p.train)).to_dict()


# What json.loads can return: the values a hostile config.json can hold.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
# ... plus what a Python caller might pass to from_dict
any_values = json_values | st.tuples(json_scalars) | st.sets(st.integers(), max_size=3) | st.just(object())


def field_names(section: str, family: str = "vae") -> list[str]:
    return list(base(family)[section])


@st.composite
def mutated_configs(draw) -> dict:
    """A valid config with a few keys replaced, added or removed."""
    family = draw(st.sampled_from(["vae", "gan"]))
    d = base(family, "seed" if family == "vae" else draw(st.sampled_from(["seed", "dcgan"])))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["model", "data", "train", None]))
        target = d if section is None else d.get(section)
        if not isinstance(target, dict):
            continue
        action = draw(st.sampled_from(["set", "set", "set", "add", "delete"]))
        if action == "set" and target:
            target[draw(st.sampled_from(sorted(target, key=repr)))] = draw(any_values)
        elif action == "add":
            target[draw(st.text(max_size=6) | st.integers())] = draw(json_values)
        elif action == "delete" and target:
            del target[draw(st.sampled_from(sorted(target, key=repr)))]
    return d


def only_config_errors(d) -> RunConfig | None:
    try:
        return RunConfig.from_dict(d)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return None


@SETTINGS
@given(mutated_configs())
def test_mutated_configs_load_or_raise_config_error(d):
    run = only_config_errors(d)
    if run is not None:  # then it is really valid, and round-trips
        run.validate()
        again = RunConfig.from_dict(json.loads(json.dumps(run.to_dict())))
        assert again.to_dict() == run.to_dict()


@SETTINGS
@given(any_values)
def test_arbitrary_objects_raise_config_error(d):
    assert only_config_errors(d) is None


@SETTINGS
@given(
    st.sampled_from([TrainConfig, DataConfig]),
    st.dictionaries(
        st.text(max_size=12) | st.sampled_from(field_names("train") + field_names("data")), any_values, max_size=5
    ),
)
def test_config_from_dict_then_validate_raise_only_config_error(cls, values):
    try:
        config_from_dict(cls, values, "x").validate()
    except ConfigError:
        pass


@st.composite
def valid_train(draw) -> TrainConfig:
    max_minutes = draw(st.none() | st.floats(min_value=1e-3, max_value=1e6))
    return TrainConfig(
        epochs=draw(st.integers(1, 1000)),
        batch_size=draw(st.integers(1, 10**5)),
        lr=draw(st.floats(min_value=1e-12, max_value=10.0)),
        lr_schedule=draw(st.sampled_from(["constant", "cosine", "linear"])),
        warmup_steps=draw(st.integers(0, 10**6)),
        seed=draw(st.integers(0, 2**63 - 1)),
        device=draw(st.sampled_from(["auto", "cpu", "cuda", "cuda:3"])),
        log_every=draw(st.integers(1, 10**6)),
        checkpoint_every=draw(st.integers(0, 10**6)),
        keep_checkpoints=draw(st.integers(1, 100)),
        grad_clip=draw(st.none() | st.floats(min_value=1e-9, max_value=1e9)),
        on_nonfinite=draw(st.sampled_from(["stop", "skip"])),
        sample_every=draw(st.integers(0, 10**6)),
        max_steps=draw(st.none() | st.integers(1, 10**9)),
        max_minutes=max_minutes,
        compile=draw(st.booleans()),
        lr_clock=draw(st.sampled_from(["steps"] if max_minutes is None else ["steps", "time"])),
    )


@st.composite
def valid_runs(draw) -> RunConfig:
    from genlab.models.vae import PRESETS

    preset = draw(st.sampled_from(sorted(PRESETS)))
    model = dataclasses.replace(
        PRESETS[preset].model,
        latent_dim=draw(st.integers(1, 512)),
        beta=draw(st.floats(min_value=0, max_value=100)),
        hidden=tuple(draw(st.lists(st.integers(1, 2048), min_size=1, max_size=4))),
    )
    data = DataConfig(
        dataset=draw(st.sampled_from(["mnist", "fashion-mnist"])),
        split=draw(st.sampled_from(["train", "test"])),
        data_dir=draw(st.none() | st.text(max_size=20)),
    )
    return RunConfig("vae", preset, model, data, draw(valid_train()))


@SETTINGS
@given(valid_runs())
def test_valid_configs_round_trip(run):
    run.validate()
    d = run.to_dict()
    again = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    assert config_differences(d, again.to_dict()) == []


@pytest.mark.parametrize(
    "section, key, value, words",
    [
        ("train", "lr", -1e-3, "train.lr"),
        ("train", "lr", math.nan, "train.lr"),
        ("train", "batch_size", 0, "train.batch_size"),
        ("train", "epochs", True, "train.epochs must be int"),
        ("train", "grad_clip", "big", "train.grad_clip"),
        ("train", "seed", 2**64, "train.seed"),
        ("train", "device", "cuda:x", "train.device"),
        ("model", "latent_dim", 0, "latent_dim"),
        ("model", "hidden", ["a"], "hidden"),
        ("model", "shape", 1, "unknown key(s) shape"),
        ("data", "dataset", "cifar", "cifar"),
        ("data", "data_dir", 5, "data.data_dir"),
    ],
)
def test_bad_values_are_named(section, key, value, words):
    d = base()
    d[section][key] = value
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(d)
    assert words in str(info.value)


def test_resume_may_change_only_when_to_stop():
    a = base()
    b = json.loads(json.dumps(a))
    b["train"].update(epochs=99, max_steps=5, max_minutes=1.0, checkpoint_every=3, device="cpu")
    b["data"]["sources"] = {"images": "/elsewhere"}
    assert config_differences(a, b) == []
    b["train"]["lr"] = 0.5
    b["model"]["hidden"] = [32]
    assert [x.split(" ")[0] for x in config_differences(a, b)] == ["model.hidden", "train.lr"]


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such run directory"):
        RunConfig.load(tmp_path / "nowhere" / "config.json")
    with pytest.raises(ConfigError, match="no such file"):
        RunConfig.load(tmp_path / "config.json")
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        RunConfig.load(tmp_path / "config.json")


def test_a_preset_names_what_a_run_changed_from_it():
    preset = get_preset("gan", "fast")
    train = TrainConfig(**preset.train)
    assert preset.differences(preset.model, train) == []
    # a saved run's config (tuples become lists in JSON) still matches its preset
    saved = RunConfig("gan", "fast", preset.model, DataConfig(), train).to_dict()
    loaded = RunConfig.from_dict(json.loads(json.dumps(saved)))
    assert preset.differences(loaded.model, loaded.train) == []
    model = dataclasses.replace(preset.model, width=48, augment="translation")
    train = dataclasses.replace(train, lr=5e-4, seed=3, max_minutes=5.0)  # seed and budget are the run's own
    assert preset.differences(model, train) == ["model.width=48", 'model.augment="translation"', "train.lr=0.0005"]
