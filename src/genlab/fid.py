"""``genlab fid A B``: FID and KID between two arbitrary sets of images, as ``python -m pytorch_fid A B``.

Each set is a folder of PNGs or a ``.npy`` array, read by :func:`genlab.evaluate.load_samples`
(the same checks as ``genlab evaluate``). Features come from genlab's shipped classifier for
``--dataset`` (default mnist), another classifier (``--classifier``, e.g. one trained on an image
folder by ``genlab train-classifier --dataset folder:PATH``) or pytorch-fid's Inception-v3
(``--inception``); the output names the extractor, because FIDs from different networks are not
comparable. A classifier reads images of the one shape it was trained at (1x28x28 for the shipped
ones), and a set of another shape is refused naming both; Inception-v3 reads 1 or 3 channels at
any size (each set of one size), resized to 299x299 as pytorch-fid does. The maths is
:func:`genlab.metrics.frechet_distance` and :func:`genlab.metrics.kernel_inception_distance`;
:func:`two_set_metrics` returns what the command prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, GenlabError

MIN_IMAGES = 10  # fewer make a 1,000-dimensional covariance (and the KID subsets) meaningless
KID_SUBSETS = 100  # as evaluate's KID: the reference implementation's 100 subsets of up to 1,000
KID_SUBSET_SIZE = 1000
# What `genlab evaluate` leaves in a PNG folder: a folder that was evaluated is still a valid set.
_GENLAB_OUTPUTS = frozenset({"metrics.json", "report.html"})


def _check_set(path: Path, flag: str) -> None:
    """Refuse a set that is missing, or a folder holding files that are not PNG images, before any is read."""
    if not path.exists():
        raise GenlabError(f"{flag} {path}: no such folder or .npy file")
    if path.is_dir():
        try:
            entries = sorted(path.iterdir())
        except OSError as e:
            raise GenlabError(f"{flag} {path}: cannot list the folder ({e.strerror or e})") from None
        others = [
            p.name
            for p in entries
            if not p.is_dir()
            and p.suffix.lower() != ".png"
            and not p.name.startswith(".")
            and p.name not in _GENLAB_OUTPUTS
        ]
        if not any(p.suffix.lower() == ".png" and not p.is_dir() for p in entries):
            raise GenlabError(f"{flag} {path} holds no .png images")
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise GenlabError(
                f"{flag} {path} holds {len(others)} file(s) that are not .png images ({shown}); "
                "genlab fid reads a folder of PNGs or a .npy array: move the others out"
            )
    elif path.suffix.lower() != ".npy":
        raise GenlabError(f"{flag} {path}: expected a folder of PNG images or a .npy file")


def _describe(path: Path, n: int) -> str:
    kind = "PNG images" if path.is_dir() else "images (.npy)"
    return f"{path} ({n:,} {kind})"


def two_set_metrics(
    a: str | Path,
    b: str | Path,
    *,
    dataset: str | None = None,
    classifier: str | Path | None = None,
    inception: str | Path | None = None,
    n: int | None = None,
    kid: bool = True,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """FID (and KID) between the image sets ``a`` and ``b`` in one extractor's feature space.

    The extractor is ``--inception``'s Inception-v3 when given, else the classifier (``classifier``,
    default genlab's shipped one for ``dataset``, itself default mnist; with ``classifier`` and no
    ``dataset`` the classifier is used whatever it was trained on). ``n`` takes the first N images of each set.
    KID is the mean (and std) of the unbiased squared MMD over :data:`KID_SUBSETS` subsets of up
    to :data:`KID_SUBSET_SIZE` rows, drawn with ``seed``. Returns a JSON-ready dict: ``fid``,
    ``kid``/``kid_std`` (when ``kid``), ``extractor`` (its name, sha256 and file), ``a``/``b``
    (path and image count).
    """
    from .evaluate import (
        GRAYSCALE_28,
        SampleShapeError,
        check_dataset_name,
        classifier_extractor,
        inception_extractor,
        load_samples,
    )
    from .metrics import feature_statistics, frechet_distance, kernel_inception_distance

    say = log or (lambda _msg: None)
    a, b = Path(a), Path(b)
    # every input is checked before any image is read or any network loaded
    _check_set(a, "A:")
    _check_set(b, "B:")
    if n is not None and n < MIN_IMAGES:
        raise ConfigError(f"-n must be at least {MIN_IMAGES}, got {n}")
    check_dataset_name(None if inception is not None else dataset, folders=True)
    shape: tuple[int, int, int] | None = None  # Inception: any size, 1 or 3 channels
    if inception is not None:
        extractor = inception_extractor(inception, device=device)
    else:
        if dataset is None and classifier is None:
            dataset = "mnist"
        extractor = classifier_extractor(dataset, classifier, device=device)
        c, h, w = extractor.meta.get("input_shape", GRAYSCALE_28)
        shape = (int(c), int(h), int(w))
    images = {}
    for name, path in (("A", a), ("B", b)):  # both read and checked before either's features
        try:
            x = load_samples(path, n, command="genlab fid", shape=shape)
        except SampleShapeError as e:
            if shape is None:
                raise
            raise SampleShapeError(
                f"{e.message} ({extractor.name} reads {'x'.join(map(str, shape))} images; for others pass "
                "--classifier FILE from `genlab train-classifier --dataset folder:PATH` on images like them, "
                "or --inception FILE)"
            ) from None
        if len(x) < MIN_IMAGES:
            raise GenlabError(f"{name}: {path} holds {len(x)} images; FID needs at least {MIN_IMAGES} per set")
        images[name] = (path, x)
    sets = {}
    for name, (path, x) in images.items():
        say(f"features of {name}: {len(x):,} images ({extractor.name})")
        sets[name] = (path, len(x), extractor.features(x))
    (_, _, fa), (_, _, fb) = sets["A"], sets["B"]
    mu_a, sigma_a = feature_statistics(fa)
    mu_b, sigma_b = feature_statistics(fb)
    result: dict[str, Any] = {
        "fid": frechet_distance(mu_a, sigma_a, mu_b, sigma_b),
        "extractor": extractor.describe(),
        **{name.lower(): {"path": str(path), "n": count} for name, (path, count, _) in sets.items()},
    }
    if kid:
        k = kernel_inception_distance(fa, fb, n_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed)
        result.update(kid=k["mean"], kid_std=k["std"], kid_subsets=k["n_subsets"], kid_subset_size=k["subset_size"])
    return result


def format_result(result: dict[str, Any]) -> str:
    """What ``genlab fid`` prints: both sets, the extractor, FID and KID.

    KID stays in the extractor's own units: x10^3 suits Inception's features, but genlab's
    classifier features are unnormalised ReLUs whose KIDs run from about 1 to thousands.
    """
    ext = result["extractor"]
    lines = [
        f"A         {_describe(Path(result['a']['path']), result['a']['n'])}",
        f"B         {_describe(Path(result['b']['path']), result['b']['n'])}",
        f"features  {ext['name']} (sha256 {ext['sha256'][:12]})",
        f"FID       {result['fid']:.4f}",
    ]
    if "kid" in result:
        lines.append(
            f"KID       {result['kid']:.4g} +/- {result['kid_std']:.2g}  "
            f"(mean +/- std over {result['kid_subsets']} subsets of {result['kid_subset_size']} images)"
        )
    return "\n".join(lines)


def cmd_fid(args: argparse.Namespace) -> int:
    from .device import inference_device

    log = (lambda msg: None) if args.quiet or args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    result = two_set_metrics(
        args.a,
        args.b,
        dataset=args.dataset,
        classifier=args.classifier,
        inception=args.inception,
        n=args.n,
        kid=not args.no_kid,
        seed=args.seed,
        device=inference_device(args.device),
        log=log,
    )
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``genlab fid`` (picked up by genlab.cli)."""
    from .argtypes import bounded_int, seed

    p = sub.add_parser(
        "fid",
        help="FID and KID between two sets of images (folders of PNGs or .npy files)",
        description="FID (and KID) between two arbitrary sets of images, each a folder of "
        "PNGs or a .npy array, in the features of genlab's classifier (default: the shipped mnist one, "
        "which reads 28x28 grayscale; --classifier FILE from `genlab train-classifier` for other images) "
        "or of Inception-v3 (--inception; any size, grayscale or RGB). The output names the feature "
        "extractor: FIDs from different extractors are not comparable.",
    )
    p.add_argument("a", help="first set: a folder of PNGs or a .npy file")
    p.add_argument("b", help="second set: a folder of PNGs or a .npy file")
    p.add_argument(
        "--dataset",
        help="whose shipped classifier extracts the features (mnist | fashion-mnist; default mnist, or "
        "whatever --classifier was trained on)",
    )
    p.add_argument("--classifier", help="classifier weights from `genlab train-classifier` instead of the shipped ones")
    p.add_argument(
        "--inception", metavar="PATH", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: Inception-v3 features"
    )
    p.add_argument("-n", type=bounded_int(1, 10**7), help="use the first N images of each set (default all)")
    p.add_argument("--no-kid", action="store_true", help="FID only (KID costs a few seconds at 10,000 images)")
    p.add_argument("--seed", type=seed, default=0, help="seed of KID's subsets (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_fid)
