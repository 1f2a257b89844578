"""Model families. Each is one file; this registry maps names to them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError
from .base import GenerativeModel, Preset, StepNoise, TrainSettings

# family name -> module; each module defines MODEL (a GenerativeModel subclass) and PRESETS.
_FAMILY_MODULES = {"vae": "genlab.models.vae", "gan": "genlab.models.gan"}


def family_module(name: str) -> ModuleType:
    if name not in _FAMILY_MODULES:
        raise ConfigError(f"unknown model family {name!r}; choose from {', '.join(_FAMILY_MODULES)}")
    return importlib.import_module(_FAMILY_MODULES[name])


def get_family(name: str) -> type[GenerativeModel]:
    return family_module(name).MODEL


def family_names() -> list[str]:
    return list(_FAMILY_MODULES)


def get_preset(family: str, name: str) -> Preset:
    presets = family_module(family).PRESETS
    if name not in presets:
        raise ConfigError(f"unknown {family} preset {name!r}; choose from {', '.join(presets)}")
    return presets[name]


def all_presets() -> list[tuple[str, Preset]]:
    """(family, preset) for every family that is installed."""
    out = []
    for fam in _FAMILY_MODULES:
        try:
            mod = family_module(fam)
        except ModuleNotFoundError:
            continue
        out.extend((fam, p) for p in mod.PRESETS.values())
    return out


def build_model(family: str, config) -> GenerativeModel:
    config.validate()
    return get_family(family)(config)


__all__ = ["GenerativeModel", "Preset", "StepNoise", "TrainSettings", "build_model", "get_family",
           "get_preset", "all_presets", "family_names", "family_module"]
