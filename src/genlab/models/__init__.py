"""Model families and the registry that plugs them in.

A family is one sub-package (``genlab/models/<family>/``) whose ``__init__`` exports
``MODEL`` (a :class:`GenerativeModel` subclass), ``PRESETS`` (name -> :class:`Preset`) and
``CLI_FLAGS`` (the ``genlab train <family>`` flags that set its config fields). Adding a family
is adding one line to :data:`FAMILIES`; the CLI's choices, flags and help, config loading and
every tool reach it from here. Tools never ask for a family's name: they ask a model for its
capabilities (``genlab.models.base``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import ConfigError
from .base import GenerativeModel, Preset, StepNoise, StepOutput, TrainSettings

# family name -> module that defines MODEL, PRESETS and CLI_FLAGS
FAMILIES: dict[str, str] = {"vae": "genlab.models.vae", "gan": "genlab.models.gan", "ddpm": "genlab.models.ddpm"}


def family_module(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def get_family(name: str) -> type[GenerativeModel]:
    model: type[GenerativeModel] = family_module(name).MODEL
    return model


def family_names() -> list[str]:
    return list(FAMILIES)


def get_preset(family: str, name: str) -> Preset:
    presets = family_module(family).PRESETS
    if name not in presets:
        raise ConfigError(f"unknown {family} preset {name!r}; choose from {', '.join(presets)}")
    preset: Preset = presets[name]
    return preset


def all_presets() -> list[tuple[str, Preset]]:
    """(family, preset) for every registered family."""
    return [(fam, p) for fam in FAMILIES for p in family_module(fam).PRESETS.values()]


@dataclass(frozen=True)
class ModelFlag:
    """A ``genlab train`` flag that sets a model config field, and the families that have it."""

    flag: str
    field: str
    type: Callable[[str], Any]
    help: str
    families: tuple[str, ...]


def model_flags() -> dict[str, ModelFlag]:
    """Every family's model flags, merged: a flag two families share (``--latent-dim``) appears once."""
    flags: dict[str, ModelFlag] = {}
    for fam in FAMILIES:
        for flag, (field, typ, help_) in family_module(fam).CLI_FLAGS.items():
            if flag in flags:
                known = flags[flag]
                if (known.field, known.type) != (field, typ):
                    raise RuntimeError(f"{flag} means {known.field} for {known.families} but {field} for {fam}")
                same = known.help == help_ or known.help.endswith(f": {help_}")
                merged = (
                    known.help
                    if same
                    else (
                        f"{known.help}; {fam}: {help_}"
                        if ": " in known.help and known.help.split(":")[0] in FAMILIES
                        else f"{known.families[0]}: {known.help}; {fam}: {help_}"
                    )
                )
                flags[flag] = ModelFlag(flag, field, typ, merged, (*known.families, fam))
            else:
                flags[flag] = ModelFlag(flag, field, typ, help_, (fam,))
    return flags


def sample_flags() -> dict[str, ModelFlag]:
    """Every family's ``genlab sample`` flags (its optional ``SAMPLE_FLAGS``: flag -> (option, type, help)),
    which a :class:`~genlab.models.base.ConfigurableSampler` takes as ``set_sampling(**options)``."""
    flags: dict[str, ModelFlag] = {}
    for fam in FAMILIES:
        for flag, (option, typ, help_) in getattr(family_module(fam), "SAMPLE_FLAGS", {}).items():
            known = flags.get(flag)
            if known is not None and (known.field, known.type) != (option, typ):
                raise RuntimeError(f"{flag} means {known.field} for {known.families} but {option} for {fam}")
            families = (*known.families, fam) if known is not None else (fam,)
            flags[flag] = ModelFlag(flag, option, typ, known.help if known is not None else help_, families)
    return flags


def sampling_flag_names(options: Iterable[str]) -> list[str]:
    """The command-line flags of sampling ``options`` (``steps`` -> ``--steps``), for error messages."""
    names = {spec.field: spec.flag for spec in sample_flags().values()}
    return [names.get(o, o) for o in options]


def configure_sampling(model: GenerativeModel, options: dict[str, Any], what: str) -> None:
    """Apply sampling ``options`` (option -> value, from :func:`sample_flags`) to ``model``; a model without
    the :class:`~genlab.models.base.ConfigurableSampler` capability is refused by name of its flags."""
    from .base import ConfigurableSampler

    if not options:
        return
    if not isinstance(model, ConfigurableSampler):
        given = sampling_flag_names(options)
        raise ConfigError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {what}: its model has no "
            "sampling options (a diffusion model has)"
        )
    model.set_sampling(**options)


def sampling_settings(model: GenerativeModel) -> dict[str, Any] | None:
    """How ``model`` draws, for the record beside figures computed from its samples: its sampling options
    and their values, or None for a model that draws in one way only (one network pass)."""
    from .base import ConfigurableSampler

    return model.sampling_settings() if isinstance(model, ConfigurableSampler) else None


def build_model(family: str, config: Any) -> GenerativeModel:
    """The model a validated config describes, after a dry build has checked that it can be built."""
    dry_build(family, config)
    return get_family(family)(config)


def dry_build(family: str, config: Any) -> GenerativeModel:
    """Validate ``config`` and build its model on PyTorch's meta device (shapes only, no memory).

    Catches what field-by-field validation cannot: widths of the wrong type deep inside a
    network, and sizes no machine holds (``--latent-dim 1000000000000``), before anything
    is allocated or written. Returns the weightless model (its shapes, sizes and settings).
    """
    import torch

    config.validate()
    try:
        with torch.device("meta"):
            model = get_family(family)(config)
    except (TypeError, ValueError, RuntimeError, OverflowError, IndexError) as e:
        raise ConfigError(
            f"these model settings do not make a {family} model: {' '.join(str(e).split())[:300]}"
        ) from None
    params = sum(p.numel() for p in model.parameters())
    tensor_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    # training holds the weights, their gradients and Adam's two moments: about 4x the weights
    limit = _memory_bytes()
    if 4 * tensor_bytes > limit:
        raise ConfigError(
            f"these model settings make a {family} model of {params:,} parameters "
            f"({tensor_bytes / 2**30:,.1f} GiB of weights, ~4x that to train), more than this "
            f"machine's {limit / 2**30:,.0f} GiB of memory; reduce the widths or latent size"
        )
    return model


def _memory_bytes() -> int:
    """Physical memory of this machine (a generous fallback where the OS does not say)."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


__all__ = [
    "FAMILIES",
    "GenerativeModel",
    "ModelFlag",
    "Preset",
    "StepNoise",
    "StepOutput",
    "TrainSettings",
    "all_presets",
    "build_model",
    "configure_sampling",
    "sampling_flag_names",
    "sampling_settings",
    "dry_build",
    "family_module",
    "family_names",
    "get_family",
    "get_preset",
    "model_flags",
    "register_family",
    "sample_flags",
]


def register_family(name: str, module: str) -> None:
    """Plug in a family from outside genlab: ``module`` (importable) defines MODEL, PRESETS and CLI_FLAGS."""
    if not name.replace("-", "").isalnum():
        raise ConfigError(f"a family name is letters, digits and '-', got {name!r}")
    FAMILIES[name] = module
