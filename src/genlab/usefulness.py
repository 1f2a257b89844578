"""Generated data as training data: Classification Accuracy Score and the augmentation gain.

FID and precision/recall say how close samples *look* to real images; these two measurements say
whether they are *useful* to a downstream classifier.

**CAS** (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative
Models", NeurIPS): draw N class-balanced labelled samples from a conditional model, train a fresh
classifier on them alone and measure its top-1 accuracy on the real test split. Beside it, the same
recipe trained on N real training images ("real accuracy") is the ceiling. The paper's abstract:
with BigGAN-deep's ImageNet samples, top-1 and top-5 accuracy decrease by 27.9 % and 41.6 % compared
to the original data, and FID and Inception Score do not predict CAS.

**Augmentation gain**: for k real training images per class, train on them alone and on the same
images plus M generated ones per class, over several seeds; the gain is the difference in real-test
accuracy (the paper's "Naive Augmentation Score" asks the same question at full data).

Both use one fixed recipe (:class:`Recipe`) and the shipped classifier's architecture
(:class:`genlab.metrics.classifier.CNNClassifier`) from scratch. Nothing is chosen on the test
split (no early stopping, no tuning), so no validation split is needed: real images come from the
'train' split only, and the test split is only ever scored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .argtypes import bounded_int, output_path
from .errors import ConfigError, GenlabError

PAPER = "Ravuri & Vinyals 2019, Classification Accuracy Score for Conditional Generative Models"
AUGMENT_FILE, AUGMENT_PLOT, ARMS_DIR = "augment.json", "augment.png", "arms"
ARMS = ("real", "real+generated")
MIXING_RULE = (
    "the k real and M generated images of every class are pooled into one training set and batches are "
    "drawn uniformly from the pool, so generated images make up M/(k+M) of what the classifier sees"
)


@dataclass(frozen=True)
class Recipe:
    """How every classifier here is trained: the same for generated and real data, never tuned on test.

    A fixed number of steps (not epochs) keeps the cost the same whatever the training set's size
    (100 images or 20,000) and makes the arms of a comparison equal in compute.
    """

    steps: int = 400  # Adam steps: about 40 s on 2 CPU cores; ~2.5 passes over 10,000 images
    batch_size: int = 64  # small batches: more updates for the same time on a CPU
    lr: float = 1e-3  # Adam's default; the shipped classifier is trained with it too
    test_batch: int = 1000  # images per forward pass when scoring


DEFAULT_RECIPE = Recipe()


# -- which models qualify ---------------------------------------------------------------------
def conditional_presets() -> list[str]:
    """``family/preset`` of every registered preset whose model config is conditional."""
    from .models import all_presets

    return [f"{fam}/{p.name}" for fam, p in all_presets() if bool(getattr(p.model, "conditional", False))]


def require_conditional(model: Any, what: str, command: str) -> None:
    """Refuse a model that cannot be asked for a class: CAS needs labelled samples."""
    if not getattr(model, "conditional", False) or getattr(model, "num_classes", 0) < 2:
        raise ConfigError(
            f"{command} needs a class-conditional model (labelled samples), but {what} is unconditional; "
            f"train one of the conditional presets: {', '.join(conditional_presets())}"
        )


# -- data ----------------------------------------------------------------------------------------
def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., C-1, 0, 1, ...: ``n`` labels, class counts differing by at most one."""
    return np.arange(n) % num_classes


def per_class_draw(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Sorted indices of ``counts[c]`` images of each class c, drawn without replacement.

    Each class's images are shuffled once per ``seed`` and the first ``counts[c]`` taken, so with the
    same seed a smaller draw is part of a larger one (the k = 10 subset lies inside the k = 100 one),
    which makes accuracies at different k differ by the data added, not by a new draw.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for c, k in enumerate(counts):
        pool = np.flatnonzero(labels == c)
        if k > len(pool):
            raise ConfigError(f"class {c} has {len(pool)} training images; {k} were asked for")
        chosen.append(pool[rng.permutation(len(pool))[:k]])
    return np.sort(np.concatenate(chosen))


def generate_labelled(model: Any, per_class: Sequence[int], seed: int, *, progress: bool = False) -> tuple:
    """(images float32 (N, 1, 28, 28) in [0, 1], labels int64 (N,)) with ``per_class[c]`` samples of class c."""
    import torch

    from .sample import generate

    labels = torch.cat([torch.full((k,), c, dtype=torch.long) for c, k in enumerate(per_class)])
    device = getattr(model, "device", torch.device("cpu"))
    gen = torch.Generator(device=device).manual_seed(seed)
    images = generate(model, len(labels), labels=labels, generator=gen, progress=progress)
    return images.numpy().copy(), labels.numpy()  # a plain copy: inference tensors cannot be trained on


# -- one classifier ------------------------------------------------------------------------------
def fit_classifier(
    images: np.ndarray, labels: np.ndarray, *, num_classes: int, recipe: Recipe, seed: int, device: str = "cpu"
):
    """A fresh :class:`~genlab.metrics.classifier.CNNClassifier` trained by ``recipe``; eval mode.

    ``images``: uint8 or float in [0, 1], (N, 1, 28, 28). Weights, dropout and batch order all come
    from ``seed``; the caller's global RNG state is left as it was.
    """
    import torch
    import torch.nn.functional as F

    from .metrics.classifier import ClassifierConfig, CNNClassifier

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    x, y = x.to(device), y.to(device)
    batch = min(recipe.batch_size, len(x))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CNNClassifier(ClassifierConfig(num_classes=num_classes)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        order = torch.Generator().manual_seed(seed)
        perm, pos = torch.randperm(len(x), generator=order), 0
        model.train()
        for _ in range(recipe.steps):
            if pos + batch > len(perm):  # a new pass: every image once per pass, in a new order
                perm, pos = torch.randperm(len(x), generator=order), 0
            idx = perm[pos : pos + batch].to(device)
            pos += batch
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def score_classifier(
    model, images: np.ndarray, labels: np.ndarray, *, num_classes: int, batch: int = 1000, device: str = "cpu"
) -> dict[str, Any]:
    """``{"accuracy", "per_class"}``: top-1 accuracy on (``images``, ``labels``) and per true class."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    preds = []
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch].to(device)
            xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
            preds.append(model(xb).argmax(dim=1).cpu())
    pred = torch.cat(preds).numpy()
    y = np.asarray(labels)
    right = pred == y
    per_class = [float(right[y == c].mean()) if (y == c).any() else None for c in range(num_classes)]
    return {"accuracy": float(right.mean()), "per_class": per_class}


def train_and_score(
    images: np.ndarray,
    labels: np.ndarray,
    test,
    *,
    recipe: Recipe,
    seed: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`fit_classifier` on (images, labels), then :func:`score_classifier` on ``test`` (a Dataset)."""
    t0 = time.perf_counter()
    model = fit_classifier(images, labels, num_classes=test.num_classes, recipe=recipe, seed=seed, device=device)
    scored = score_classifier(
        model,
        test.images.numpy(),
        test.labels.numpy(),
        num_classes=test.num_classes,
        batch=recipe.test_batch,
        device=device,
    )
    return {**scored, "n_train": int(len(labels)), "seconds": round(time.perf_counter() - t0, 1)}


# -- Classification Accuracy Score ---------------------------------------------------------------
def classification_accuracy_score(
    model: Any,
    train,
    test,
    *,
    n: int,
    seed: int = 0,
    recipe: Recipe = DEFAULT_RECIPE,
    device: str = "cpu",
    progress: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    drawn: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """CAS of a conditional ``model`` with ``n`` class-balanced samples, beside the real accuracy.

    ``train`` and ``test`` are :class:`genlab.data.Dataset` splits (the real images come from
    ``train`` only; ``test`` is only scored). The real arm draws exactly as many images of each class
    as were generated (:func:`per_class_draw` with ``seed``). ``drawn``: ``n`` samples (images, labels)
    already drawn class-balanced from ``model`` (``genlab evaluate``'s), used instead of drawing again.
    Returns a JSON-ready dict.
    """
    require_conditional(model, "this model", "CAS")
    c = test.num_classes
    if n < c:
        raise ConfigError(f"CAS needs at least one sample per class: -n {n} is fewer than the {c} classes")
    counts = np.bincount(balanced_labels(n, c), minlength=c).tolist()
    each = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[-1]}-{counts[0]}"
    if drawn is not None:
        x_gen, y_gen = np.asarray(drawn[0], np.float32), np.asarray(drawn[1], np.int64)
        if len(x_gen) != n or np.bincount(y_gen, minlength=c).tolist() != counts:
            raise ValueError(f"drawn: {n} class-balanced samples expected, got {len(x_gen)}")
        log(f"CAS: the {n} labelled samples scored above ({each} per class)")
    else:
        log(f"CAS: sampling {n} labelled images ({each} per class)")
        x_gen, y_gen = generate_labelled(model, counts, seed, progress=progress)
    idx = per_class_draw(train.labels.numpy(), counts, seed)
    log(f"CAS: training a classifier on the {n} samples, then one on {n} real {train.name} {train.split} images")
    generated = train_and_score(x_gen, y_gen, test, recipe=recipe, seed=seed, device=device)
    real = train_and_score(
        train.images.numpy()[idx], train.labels.numpy()[idx], test, recipe=recipe, seed=seed, device=device
    )
    return {
        "cas": generated["accuracy"],
        "real_accuracy": real["accuracy"],
        "gap_points": round(100 * (real["accuracy"] - generated["accuracy"]), 2),
        "per_class": {"generated": generated["per_class"], "real": real["per_class"]},
        "class_names": list(test.class_names),
        "n": int(n),
        "per_class_count": counts,
        "seed": int(seed),
        "real_from": f"{train.name} {train.split} ({n} images, class-balanced, seed {seed})",
        "tested_on": f"{test.name} {test.split} ({len(test)} images)",
        "recipe": asdict(recipe),
        "classifier": "genlab-cnn28 (the shipped classifier's architecture), trained from scratch",
        "seconds": {"generated": generated["seconds"], "real": real["seconds"]},
        "paper": PAPER,
    }


def add_cas(
    evaluation,
    run_dir: Path,
    *,
    n: int,
    seed: int,
    device: str,
    data_dir: str | None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    recipe: Recipe | None = None,
    sampling: Mapping[str, Any] | None = None,
) -> None:
    """Put the CAS of the run in ``run_dir`` into an evaluation: ``result["cas"]`` and a summary row
    whose 'real data' reference point is the real accuracy. ``sampling``: the model's sampling options
    (see :func:`genlab.evaluate.evaluate_path`), recorded in ``result["cas"]["sampling"]``."""
    from .checkpoint import load_run
    from .data import load_dataset
    from .evaluate import _row
    from .models import configure_sampling, sampling_settings

    model, run = load_run(run_dir, device=device)
    what = f"{run_dir} ({run.family}/{run.preset})"
    require_conditional(model, what, "--cas")
    configure_sampling(model, dict(sampling or {}), what)
    dataset = evaluation.result["dataset"]
    data_dir = data_dir if data_dir is not None else run.data.data_dir
    train = load_dataset(dataset, "train", data_dir=data_dir, download=False)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    # The evaluation's samples of this run, drawn class-balanced with their labels, are CAS's too: a
    # diffusion model's 10,000 take minutes to draw, and drawing them twice would buy nothing.
    labels = getattr(evaluation, "labels", None)
    shared = labels is not None and len(labels) == n and evaluation.result.get("source", {}).get("kind") == "run"
    cas = classification_accuracy_score(
        model,
        train,
        test,
        n=n,
        seed=seed,
        recipe=recipe or DEFAULT_RECIPE,
        device=device,
        progress=progress,
        log=log,
        drawn=(evaluation.samples, labels) if shared and labels is not None else None,
    )
    cas["samples"] = "the evaluation's (scored by the metrics above too)" if shared else "drawn for CAS"
    if run.data.split == "test":
        evaluation.result["notes"].append(
            "CAS: the model was trained on the test split the classifiers are scored on, so CAS is optimistic"
        )
    how = sampling_settings(model)
    if how:
        cas["sampling"] = how
    evaluation.result["cas"] = cas
    evaluation.result["summary"].append(
        _row(
            "cas",
            "CAS (top-1 accuracy)",
            cas["cas"],
            "higher",
            None,
            f"accuracy on the real test split of a classifier trained only on {n} generated labelled samples "
            f"({PAPER}); the 'real data' column is the same recipe trained on {n} real training images, the "
            "ceiling. Far below it: the samples miss what tells the classes apart.",
            display_scale=100,
            unit="%",
            baselines={"real": cas["real_accuracy"]},
        )
    )


def require_conditional_run(run_dir: Path, device: str, data_dir: str | None = None) -> None:
    """Refuse ``--cas`` early, before any sampling: a model that is not conditional, or no train split
    to draw the real images of the comparison from."""
    from .checkpoint import load_run
    from .data import load_dataset
    from .evaluate import check_dataset_name

    model, run = load_run(run_dir, device=device)
    require_conditional(model, f"{run_dir} ({run.family}/{run.preset})", "--cas")
    check_dataset_name(run.data.dataset)  # the classifier reads 28x28 grayscale images of a known dataset
    load_dataset(run.data.dataset, "train", data_dir=data_dir or run.data.data_dir, download=False, verify=False)


# -- the augmentation gain -------------------------------------------------------------------
def _mean_spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one value) of accuracies over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "values": [float(v) for v in arr],
    }


def _arm_key(identity: dict[str, Any], arm: str, k: int, m: int, seed_: int, recipe: Recipe, test) -> dict:
    """What an arm's cached result depends on; a cached file with another key is recomputed."""
    # A moved run folder keeps its cache; the real arm is the same however the model samples.
    ignored = ("run", "step") if arm != "real" else ("run", "step", "sampling")
    return {
        **{k: v for k, v in identity.items() if k not in ignored},
        "arm": arm,
        "real_per_class": k,
        "synthetic_per_class": m if arm != "real" else 0,  # the real arm is the same whatever M is
        "seed": seed_,
        "recipe": asdict(recipe),
        "test": f"{test.name} {test.split} {len(test)}",
    }


def augmentation_gain(
    model: Any,
    train,
    test,
    *,
    real_per_class: Sequence[int],
    synthetic_per_class: int,
    seeds: int,
    out: Path,
    identity: dict[str, Any],
    recipe: Recipe = DEFAULT_RECIPE,
    device: str = "cpu",
    progress: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Real-test accuracy with k real images per class, alone and plus ``synthetic_per_class`` generated ones.

    For seed s (0 .. ``seeds``-1) the real subset (:func:`per_class_draw`), the generated images and the
    classifier's initialisation all come from s, and both arms share them. Each arm's result is written
    to ``out/arms/`` as soon as it is known (atomically) and reused on a re-run when its key (``identity``:
    the model's weights and dataset; the arm's settings; the recipe) matches, so an interrupted run
    resumes where it stopped. Writes ``out/augment.json`` and ``out/augment.png``; returns the JSON.
    """
    from .io import atomic_write_text, read_json
    from .plots import plot_augmentation
    from .progress import Progress

    require_conditional(model, "this model", "augment")
    c = test.num_classes
    ks = sorted(set(real_per_class))
    m = synthetic_per_class
    arms = [(k, s, arm) for s in range(seeds) for k in ks for arm in ARMS]
    results: dict[tuple[int, int, str], dict[str, Any]] = {}
    for k, s, arm in arms:
        path = out / ARMS_DIR / f"k{k}-seed{s}-{'real' if arm == 'real' else f'aug{m}'}.json"
        key = _arm_key(identity, arm, k, m, s, recipe, test)
        try:
            found = read_json(path, "cached arm")
        except GenlabError:  # missing or damaged: computed below
            continue
        if isinstance(found, dict) and found.get("key") == key and isinstance(found.get("result"), dict):
            results[(k, s, arm)] = found["result"]
    if results:
        log(f"augment: {len(results)} of {len(arms)} arms already done in {out / ARMS_DIR}; reusing them")
    todo = [a for a in arms if a not in results]
    synthetic: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with Progress(len(arms), desc="augment", unit="arm", initial=len(results), enabled=progress, announce=True) as bar:
        for k, s, arm in todo:
            idx = per_class_draw(train.labels.numpy(), [k] * c, s)
            x, y = train.images.numpy()[idx].astype(np.float32) / 255.0, train.labels.numpy()[idx]
            if arm != "real":
                if s not in synthetic:
                    log(f"augment: sampling {m} images per class (seed {s})")
                    synthetic = {s: generate_labelled(model, [m] * c, s)}  # one seed's worth held at a time
                xg, yg = synthetic[s]
                x, y = np.concatenate([x, xg]), np.concatenate([y, yg])
            res = train_and_score(x, y, test, recipe=recipe, seed=s, device=device)
            res["real_indices_sha256"] = hashlib.sha256(idx.tobytes()).hexdigest()[:16]
            results[(k, s, arm)] = res
            path = out / ARMS_DIR / f"k{k}-seed{s}-{'real' if arm == 'real' else f'aug{m}'}.json"
            key = _arm_key(identity, arm, k, m, s, recipe, test)
            atomic_write_text(path, json.dumps({"key": key, "result": res}, indent=1) + "\n")
            log(f"augment: k={k} seed {s} {arm}: accuracy {res['accuracy']:.4f} ({res['seconds']} s)")
            bar.update(len(results))
            bar.milestone()
    rows = []
    for k in ks:
        alone = [results[(k, s, "real")]["accuracy"] for s in range(seeds)]
        mixed = [results[(k, s, "real+generated")]["accuracy"] for s in range(seeds)]
        gains = [100 * (b - a) for a, b in zip(alone, mixed, strict=True)]  # paired: same subset and seed
        rows.append(
            {
                "real_per_class": k,
                "real": _mean_spread(alone),
                "real+generated": _mean_spread(mixed),
                "gain_points": _mean_spread(gains),
                "per_class": {
                    arm: np.mean([results[(k, s, arm)]["per_class"] for s in range(seeds)], axis=0).tolist()
                    for arm in ARMS
                },
            }
        )
    result = {
        **identity,
        "real_per_class": ks,
        "synthetic_per_class": m,
        "seeds": list(range(seeds)),
        "mixing_rule": MIXING_RULE,
        "real_from": f"{train.name} {train.split} (drawn per class and seed; the same for both arms)",
        "tested_on": f"{test.name} {test.split} ({len(test)} images; never trained on or used to choose anything)",
        "recipe": asdict(recipe),
        "classifier": "genlab-cnn28 (the shipped classifier's architecture), trained from scratch",
        "class_names": list(test.class_names),
        "rows": rows,
        "paper": PAPER,
    }
    atomic_write_text(out / AUGMENT_FILE, json.dumps(result, indent=2, allow_nan=False) + "\n")
    plot_augmentation(result, out / AUGMENT_PLOT)
    return result


def augment_table_text(result: dict[str, Any]) -> str:
    """The augmentation table as aligned text (what ``genlab augment`` prints)."""
    m = result["synthetic_per_class"]
    head = ("real/class", "real only (%)", f"+{m} generated/class (%)", "gain (points)")
    lines = [head]
    for row in result["rows"]:
        a, b, g = row["real"], row["real+generated"], row["gain_points"]
        lines.append(
            (
                str(row["real_per_class"]),
                f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}",
                f"{100 * b['mean']:.2f} ± {100 * b['std']:.2f}",
                f"{g['mean']:+.2f} ± {g['std']:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text) + f"\nmean ± standard deviation over {len(result['seeds'])} seeds"


# -- the command ---------------------------------------------------------------------------------
def parse_counts(text: str) -> list[int]:
    """``"10,100,1000"`` -> ``[10, 100, 1000]``: positive whole numbers, sorted, repeats dropped."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def cmd_augment(args: argparse.Namespace) -> int:
    from .checkpoint import load_run
    from .cli import sampling_options
    from .data import load_dataset
    from .device import inference_device
    from .evaluate import check_dataset_name, is_run_dir, scored_weights
    from .io import check_writable_folder
    from .models import configure_sampling, sampling_settings

    run_dir = Path(args.run)
    if not is_run_dir(run_dir):
        raise GenlabError(f"{run_dir}: not a genlab run directory (no config.json)")
    device = inference_device(args.device)
    model, run = load_run(run_dir, device=device)
    what = f"{run_dir} ({run.family}/{run.preset})"
    require_conditional(model, what, "genlab augment")
    configure_sampling(model, sampling_options(args), what)
    check_dataset_name(run.data.dataset)  # the classifier reads 28x28 grayscale images of a known dataset
    out = Path(args.out) if args.out else run_dir / "augment"
    check_writable_folder(out)
    data_dir = args.data_dir if args.data_dir is not None else run.data.data_dir
    train = load_dataset(run.data.dataset, "train", data_dir=data_dir, download=False)
    test = load_dataset(run.data.dataset, "test", data_dir=data_dir)
    smallest = int(np.bincount(train.labels.numpy(), minlength=test.num_classes).min())
    if args.real_per_class[-1] > smallest:
        raise ConfigError(
            f"--real-per-class {args.real_per_class[-1]} is more than the {smallest} training images of the "
            f"smallest {run.data.dataset} class"
        )
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if run.data.split == "test":
        log("warning: the model was trained on the test split the classifiers are scored on: gains are optimistic")
    weights = scored_weights(run_dir)
    identity = {
        "run": str(run_dir),
        "family": run.family,
        "preset": run.preset,
        "dataset": run.data.dataset,
        "weights_sha256": weights.get("weights_sha256"),
        "step": weights.get("step"),
    }
    how = sampling_settings(model)
    if how:  # part of each cached arm's key: samples drawn another way are another arm
        identity["sampling"] = how
    result = augmentation_gain(
        model,
        train,
        test,
        real_per_class=args.real_per_class,
        synthetic_per_class=args.synthetic_per_class,
        seeds=args.seeds,
        out=out,
        identity=identity,
        device=device,
        progress=not args.quiet,
        log=log,
    )
    if not args.quiet:
        print(f"{run.family}/{run.preset} on {run.data.dataset}: real-test accuracy, {result['mixing_rule']}")
        print(augment_table_text(result))
        print(f"wrote {out / AUGMENT_FILE} and {out / AUGMENT_PLOT}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    from .cli import add_sampling_flags

    p = sub.add_parser(
        "augment",
        help="does generated data help a classifier? accuracy with and without it",
        description="For each k in --real-per-class, train genlab's CNN classifier on k real training images "
        "per class alone and together with --synthetic-per-class generated ones (a conditional run), "
        "over --seeds seeds, and score both on the real test split. Writes augment.json and augment.png "
        "into --out (default RUN/augment); finished arms are cached there, so an interrupted run resumes.",
    )
    p.add_argument("run", help="run directory of a class-conditional model")
    p.add_argument(
        "--real-per-class",
        type=parse_counts,
        default=[10, 100, 1000],
        help="comma-separated real images per class (default 10,100,1000)",
    )
    p.add_argument(
        "--synthetic-per-class",
        type=bounded_int(1, 100_000),
        default=1000,
        help="generated images per class added to the real ones (default 1000)",
    )
    p.add_argument("--seeds", type=bounded_int(1, 100), default=3, help="seeds 0..S-1 per k and arm (default 3)")
    p.add_argument("--out", type=output_path, help="output folder (default RUN/augment)")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files (default: the run's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_sampling_flags(p)
    p.set_defaults(func=cmd_augment)
