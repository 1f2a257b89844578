"""Shared pytest fixtures: where the real datasets are, and an isolated data environment."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

_FASHION_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


def _find_shared_mnist() -> Path | None:
    """``shared/datasets/mnist`` in the repo or beside it (CI clones sit next to ``shared/``)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "datasets" / "mnist"
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the official MNIST test files (env GENLAB_TEST_MNIST_DIR overrides).

    Fails rather than skips when absent: CI always has the data, so a silent
    skip would hide a broken setup.
    """
    env = os.environ.get("GENLAB_TEST_MNIST_DIR")
    found = Path(env) if env else _find_shared_mnist()
    if found is None or not (found / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST test files not found (looked at {found}); set GENLAB_TEST_MNIST_DIR")
    return found


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Folder with Debian's dataset-fashion-mnist files (env GENLAB_TEST_FASHION_DIR overrides)."""
    found = Path(os.environ.get("GENLAB_TEST_FASHION_DIR", _FASHION_DEFAULT))
    if not (found / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found at {found}; apt-get install dataset-fashion-mnist")
    return found


@pytest.fixture
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every dataset location (home, cache, system dir) into tmp and block the network.

    Returns the tmp root; the cache is ``<root>/cache`` and the system dir ``<root>/system``.
    """
    root = tmp_path / "env"
    for sub in ("home", "cache", "system"):
        (root / sub).mkdir(parents=True)
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("GENLAB_SYSTEM_DATA_DIR", str(root / "system"))
    monkeypatch.delenv("GENLAB_DATA_DIR", raising=False)

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"network disabled in tests: {url}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return root


# Tests run many tiny steps; on a 2-core machine shared with other processes,
# two intra-op threads spin against each other and a step can take 30x longer.
# One thread keeps the suite fast and steady (subprocesses inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch as _torch

    _torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
