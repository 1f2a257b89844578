"""``metrics.json`` and self-contained HTML pages for ``genlab evaluate`` and ``genlab compare``.

Every image is embedded as a base64 PNG, so a report is one file that can be mailed or
attached to an issue. Figures are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
     padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
     vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.best{font-weight:bold;background:#e8f6e8}.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.4em .8em}
.small{color:#666;font-size:.9em}img{image-rendering:pixelated;max-width:100%;height:auto}.runs{display:flex;flex-wrap:wrap;gap:1.5em}
"""

BETTER_WORDS = {"lower": "lower", "higher": "higher"}
VERDICT_HEADING = "Which run is best, by metric"


# -- small helpers --------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A number the way a table should show it: 4 significant digits, ints as ints."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def better_text(better: str, row: dict[str, Any] | None = None) -> str:
    """How a row's direction reads: lower, higher, or closer to T in the units ``row`` is shown in."""
    if better.startswith("target:"):
        target = better.split(":", 1)[1]
        if row is not None and "display_scale" in row:
            target = fmt(float(target) * row["display_scale"]) + (" %" if row.get("unit") == "%" else "")
        return f"closer to {target}"
    return BETTER_WORDS.get(better, better)


def shown(row: dict[str, Any], value: Any) -> str:
    """``value`` of ``row`` as a table shows it: times the row's ``display_scale`` (KID x10^3, copies
    in %), which metrics.json keeps raw."""
    scale = row.get("display_scale")
    if scale is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = value * scale
    return fmt(value)


def label_text(row: dict[str, Any]) -> str:
    """The metric's name with the unit it is shown in: "KID (×10³)", "likely copies (%)"."""
    return row["label"] + (f" ({row['unit']})" if row.get("unit") else "")


def value_text(row: dict[str, Any]) -> str:
    """Value, ± std and "of N" as the tables show them."""
    return (
        shown(row, row["value"])
        + (f" ± {shown(row, row['std'])}" if row.get("std") is not None else "")
        + (f" of {row['of']}" if "of" in row else "")
    )


def baseline_text(row: dict[str, Any], which: str) -> str:
    """The row's reference point ``which`` ("real" or "blurred"), or "" when it has none."""
    found = row.get("baselines", {})
    return shown(row, found[which]) if which in found else ""


def fmt_p(p: Any) -> str:
    """A p-value: below 1e-10 all that matters is that it is tiny (KS at n = 10,000 gives 1e-137)."""
    if isinstance(p, float) and 0 <= p < 1e-10:
        return "< 1e-10"
    return fmt(p)


def fmt_near_zero(value: Any, scale: float) -> str:
    """:func:`fmt`, with a value below a millionth of ``scale`` (e.g. the data's spread) shown as 0:
    the mean of centred projections is 0 up to rounding, and 1.82e-15 would read as a finding."""
    if isinstance(value, float) and math.isfinite(value) and scale > 0 and abs(value) < 1e-6 * scale:
        value = 0.0
    return fmt(value)


def score(row: dict[str, Any]) -> float | None:
    """A number where larger is better, for picking the best run; None when not comparable."""
    v = row.get("value")
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return None
    b = row["better"]
    if b == "lower":
        return -float(v)
    if b == "higher":
        return float(v)
    if b.startswith("target:"):
        return -abs(float(v) - float(b.split(":", 1)[1]))
    return None


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{png_data_uri(png)}" alt="{html.escape(alt)}"{w}>'


def grid_png(images: np.ndarray, nrow: int | None = None, scale: int = 2) -> bytes:
    """(N, 1, H, W) float in [0, 1] -> PNG bytes of a grid, enlarged ``scale`` times."""
    import torch
    from PIL import Image

    from .sample import grid_image, png_bytes

    im = grid_image(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), nrow=nrow)
    return png_bytes(im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST))


def pairs_png(samples: np.ndarray, train: np.ndarray, scale: int = 3) -> bytes:
    """Samples on the top row, their nearest training images below, one pair per column."""
    k = len(samples)
    both = np.concatenate([samples, train])  # row 1: samples, row 2: training images
    return grid_png(both, nrow=max(k, 1), scale=scale)


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def class_histogram_png(hist: Sequence[float], real: Sequence[float], class_names: Sequence[str]) -> bytes:
    """Bars: the fraction of samples the classifier puts in each class, beside the real fractions."""
    from . import plots  # noqa: F401, I001  (selects the Agg backend before pyplot loads)
    import matplotlib.pyplot as plt

    idx = np.arange(len(hist))
    fig, ax = plt.subplots(figsize=(7.5, 3))
    ax.bar(idx - 0.2, hist, width=0.4, label="samples")
    ax.bar(idx + 0.2, real, width=0.4, label="real (test)", alpha=0.7)
    ax.set_xticks(idx)
    ax.set_xticklabels(class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def cas_per_class_png(
    generated: Sequence[float | None], real: Sequence[float | None], class_names: Sequence[str]
) -> bytes:
    """Bars: per-class test accuracy of the classifier trained on samples, beside the one trained on real images."""
    from . import plots  # noqa: F401, I001  (selects the Agg backend before pyplot loads)
    import matplotlib.pyplot as plt

    idx = np.arange(len(generated))
    gen = [100 * (v or 0.0) for v in generated]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.bar(idx - 0.2, gen, width=0.4, label="trained on generated samples (CAS)")
    ax.bar(idx + 0.2, [100 * (v or 0.0) for v in real], width=0.4, label="trained on real images", alpha=0.7)
    for i, v in enumerate(gen):
        if v < 5:  # a dropped class has no visible bar: say so where it would be
            ax.annotate(f"{v:.0f}%", (i - 0.2, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax.set_xticks(idx)
    ax.set_xticklabels(class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    # above the axes: inside, it would hide the bars of the first classes
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def cas_section(cas: dict[str, Any]) -> str:
    """report.html's CAS section: the two accuracies, the per-class bars and how to read them."""
    names = cas.get("class_names") or [str(i) for i in range(len(cas["per_class"]["generated"]))]
    recipe = cas.get("recipe", {})
    return (
        "<h2>Generated data as training data: Classification Accuracy Score</h2>"
        "<table><tr><th>classifier trained on</th><th>images</th><th>real test accuracy (top-1)</th></tr>"
        f'<tr><td>generated samples (CAS)</td><td class="num">{cas["n"]}</td>'
        f'<td class="num"><b>{100 * cas["cas"]:.2f} %</b></td></tr>'
        f'<tr><td>real training images ({html.escape(cas.get("real_from", ""))})</td><td class="num">{cas["n"]}</td>'
        f'<td class="num">{100 * cas["real_accuracy"]:.2f} %</td></tr></table>'
        + img_tag(cas_per_class_png(cas["per_class"]["generated"], cas["per_class"]["real"], names), "CAS per class")
        + f'<p class="small">Both classifiers have the shipped classifier\'s architecture, trained from scratch with '
        f"one fixed recipe ({recipe.get('steps')} Adam steps of {recipe.get('batch_size')} images, lr "
        f"{recipe.get('lr')}, seed {cas.get('seed')}) and tested on {html.escape(cas.get('tested_on', ''))}. "
        f"The gap, {fmt(cas.get('gap_points'))} points, is what the samples lack as training data; a class whose "
        "blue bar is near 0 is one the model does not produce (or produces as another class). After "
        f"{html.escape(cas.get('paper', 'Ravuri & Vinyals 2019'))}, whose abstract reports that with BigGAN-deep's "
        "ImageNet samples top-1 and top-5 accuracy decrease by 27.9 % and 41.6 % compared to real data, and that "
        "FID and Inception Score do not predict CAS.</p>"
    )


def training_curves_png(
    runs: Sequence[tuple[str, Path | list[dict[str, Any]]]],
    *,
    colors: Sequence[int] | None = None,
    skip: frozenset[str] = frozenset(),
) -> bytes | None:
    """One panel per figure the runs logged in metrics.jsonl (:func:`genlab.plots.curve_keys`), one line
    per run; None if no data. Each run is (name, its metrics.jsonl) or (name, the records read from it).

    Only finite numbers are drawn: a damaged log's huge, infinite or NaN values are left out.
    ``colors``: each run's colour index (default: its position), so a run keeps its colour across
    figures; ``skip``: figures drawn elsewhere.
    """
    from . import plots
    from .io import read_jsonl

    logs = [(name, _plottable(src if isinstance(src, list) else read_jsonl(src))) for name, src in runs]
    keys = [k for k in plots.curve_keys(rec for _, records in logs for rec in records) if k not in skip]
    color = list(colors) if colors is not None else list(range(len(logs)))
    if not keys:
        return None
    fig, axes = plots.panel_grid(len(keys))
    for ax, key in zip(axes, keys, strict=True):
        for i, (name, records) in enumerate(logs):
            steps, values = plots.curve(records, key)
            if steps:  # a run that never logged this figure (another family's) gets no line here
                # one colour per run on every panel, even where earlier runs have no line
                ax.plot(
                    steps,
                    values,
                    lw=1.2,
                    label=name,
                    color=f"C{color[i] % 10}",
                    marker="o" if len(steps) < 20 else None,
                    ms=3,
                )
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure_png(fig)


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _plottable(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with a finite step, each keeping only its finite numbers (under short string keys)."""
    return [
        {k: v for k, v in rec.items() if _finite(v) and len(k) <= 100} for rec in records if _finite(rec.get("step"))
    ]


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _notes(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)


# -- genlab evaluate ------------------------------------------------------------------------
def metrics_table_text(result: dict[str, Any]) -> str:
    """The headline numbers as aligned text (what ``genlab evaluate`` prints), with the reference
    points (real data, blurred real data) when the result has them and a line on how to read them."""
    summary = result["summary"]
    with_points = any(r.get("baselines") for r in summary)
    rows = [("metric", "value", *(("real data", "blurred") if with_points else ()), "better", "extractor")]
    for r in summary:
        points = (baseline_text(r, "real"), baseline_text(r, "blurred")) if with_points else ()
        rows.append((label_text(r), value_text(r), *points, better_text(r["better"], r), r["extractor"] or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if with_points:
        lines.append(reading_guide(result))
    return "\n".join(lines)


def reading_guide(result: dict[str, Any]) -> str:
    """One sentence on how to read a metric against its reference points."""
    points = result.get("reference_points") or {}
    real, blurred = points.get("real", {}), points.get("blurred", {})
    if not real:
        return ""
    n_note = f", n={real['n']}" if real.get("n") not in (None, result.get("n")) else ""
    return (
        f"How to read: 'real data' is what unseen real images ({real.get('images', '?')}{n_note}, against "
        f"{real.get('against', 'the reference')}) score, the best a model can expect; 'blurred' is the same images "
        f"after a {blurred.get('images', 'blur').rsplit(', ', 1)[-1]}, a clearly bad mark. A model near 'real data' is "
        "good; one at or past 'blurred' is no better than blurred real images."
    )


def write_metrics_json(result: dict[str, Any], path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(result, indent=2, allow_nan=False) + "\n")


def _scored_weights(source: dict[str, Any]) -> str:
    """Which weights a run's evaluation scored: a report must not pass for one of the run as it is now."""
    sha = source.get("weights_sha256")
    if not isinstance(sha, str):
        return ""
    step = source.get("step")
    at = f"step {step}" if step is not None else "an unrecorded step"
    return (
        f'<p class="small">Scored weights: {html.escape(str(source.get("weights_file", "")))} at '
        f"{html.escape(at)} (sha256 {html.escape(sha[:16])}). After <code>genlab train --resume</code> the run's "
        "weights change and this report describes the earlier ones: evaluate again.</p>"
    )


SOURCE_KINDS = {"run": "run", "npy": "sample array", "png-folder": "folder of PNGs"}


def _source_text(src: dict[str, Any]) -> str:
    """What was scored, as a sentence: "Scored: run <path> (vae / mlp, trained on mnist test)"."""
    if not src:
        return ""
    what = SOURCE_KINDS.get(str(src.get("kind")), str(src.get("kind", "samples")))
    facts = []
    if src.get("family"):
        facts.append(f"{src['family']} / {src.get('preset', '?')}")
    if src.get("trained_on"):
        facts.append(f"trained on {src['trained_on']}")
    if isinstance(src.get("sampling"), dict):
        from .evaluate import describe_sampling

        facts.append(f"sampled with {describe_sampling(src['sampling'])}")
    if isinstance(src.get("sampling_seconds"), (int, float)):
        facts.append(f"drawn in {src['sampling_seconds']:g} s")
    about = f" ({html.escape(', '.join(facts))})" if facts else ""
    return f"Scored: {html.escape(what)} <code>{html.escape(str(src.get('path', src.get('name', ''))))}</code>{about}."


def evaluation_html(evaluation) -> str:
    """The self-contained report of one evaluation (a :class:`genlab.evaluate.Evaluation`)."""
    r = evaluation.result
    src = r.get("source", {})
    title = f"genlab evaluation: {src.get('name', '')} on {r['dataset']}"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="small">n = {r["n"]} samples, reference: {html.escape(r["dataset"])} '
        f"{r['reference']['split']} split ({r['reference']['n']} images; {r['reference']['n_subset']} "
        f"drawn for KID, precision/recall and KS), seed {r['seed']}, genlab {r['genlab_version']}, "
        f"{r['seconds']} s.<br>{_source_text(src)}</p>",
        _scored_weights(src),
        _notes(r.get("notes", [])),
    ]
    with_points = any(row.get("baselines") for row in r["summary"])
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th>"
        + (
            '<th>real data<br><span class="small">floor</span></th><th>blurred<br>'
            '<span class="small">clearly bad</span></th>'
            if with_points
            else ""
        )
        + "<th>better</th><th>extractor</th><th>what it means</th></tr>"
    )
    for row in r["summary"]:
        points = (
            f'<td class="num">{html.escape(baseline_text(row, "real") or "—")}</td>'
            f'<td class="num">{html.escape(baseline_text(row, "blurred") or "—")}</td>'
            if with_points
            else ""
        )
        parts.append(
            f'<tr><td>{html.escape(label_text(row))}</td><td class="num"><b>{html.escape(value_text(row))}</b></td>'
            f"{points}<td>{html.escape(better_text(row['better'], row))}</td>"
            f"<td>{html.escape(row['extractor'] or '')}</td><td>{html.escape(row['explain'])}</td></tr>"
        )
    parts.append("</table>")
    if with_points:
        parts.append(f'<p class="small">{html.escape(reading_guide(r))}</p>')
    if r.get("extractors"):
        parts.append(
            '<p class="small">Extractors: '
            + "; ".join(
                html.escape(
                    f"{e['name']} (sha256 {e['sha256'][:12]}"
                    + (
                        f", test accuracy {e['test_accuracy']} on {e.get('accuracy_on')}"
                        if "test_accuracy" in e
                        else ""
                    )
                    + ")"
                )
                for e in r["extractors"].values()
            )
            + "</p>"
        )
    if "nll" in r:
        nll = r["nll"]
        parts.append(
            "<h2>Test log-likelihood (importance-weighted bound)</h2><table>"
            + "".join(
                f'<tr><td>{html.escape(k)}</td><td class="num">{html.escape(fmt(nll.get(k)))}</td></tr>'
                for k in (
                    "iwae_nll_nats",
                    "iwae_nll_sem",
                    "elbo_nats",
                    "kl_nats",
                    "k",
                    "n_images",
                    "active_units",
                    "latent_dim",
                    "likelihood",
                )
                if k in nll
            )
            + "</table>"
        )
    if "cas" in r:
        parts.append(cas_section(r["cas"]))
    parts.append("<h2>Samples</h2>" + img_tag(grid_png(evaluation.samples[:64], nrow=8), "sample grid"))
    modes = r["details"].get("modes")
    if modes:
        names = modes.get("class_names") or [str(i) for i in range(len(modes["histogram"]))]
        missing = ", ".join(names[c] for c in modes["missing_classes"]) or "none"
        parts.append(
            "<h2>Classes the classifier sees</h2>"
            + img_tag(class_histogram_png(modes["histogram"], modes["real_histogram"], names), "class histogram")
            + f'<p class="small">Normalised entropy {fmt(modes["normalized_entropy"])} (1 = uniform); '
            f"missing classes: {html.escape(missing)}.</p>"
        )
    memo = r["details"].get("memo")
    if memo and evaluation.pairs is not None:
        dists = ", ".join(fmt(c["distance"]) for c in memo["closest"])
        parts.append(
            "<h2>Closest training images</h2>"
            f"<p>Top row: the {len(memo['closest'])} samples nearest to a training image "
            f"({html.escape(memo['train_set'])}); bottom row: that training image. Pixel distances: "
            f"{dists}. Copy threshold {fmt(memo['threshold'])} (the {memo['quantile']:.0%} quantile of "
            f"held-out images' distances); {memo['n_copies']} of {r['n']} samples are below it.</p>"
            + img_tag(pairs_png(*evaluation.pairs), "closest training images")
        )
    ks = r["details"].get("ks")
    if ks:
        parts.append(
            "<h2>Kolmogorov-Smirnov tests</h2><table><tr><th>statistic</th><th>real mean</th>"
            "<th>sample mean</th><th>shift (real SDs)</th><th>KS distance D</th><th>p (Holm)</th><th>differs</th></tr>"
        )
        for t in ks["tests"]:
            cls = ' class="best"' if not t["differs"] else ""
            spread = max(abs(t.get("real_std") or 0.0), abs(t["real_mean"]), abs(t["fake_mean"]))
            effect = t.get("effect")
            parts.append(
                f"<tr{cls}><td>{html.escape(str(t['statistic']))}</td>"
                f'<td class="num">{fmt_near_zero(t["real_mean"], spread)}</td>'
                f'<td class="num">{fmt_near_zero(t["fake_mean"], spread)}</td>'
                f'<td class="num">{"n/a" if effect is None else f"{effect:+.2f}"}</td>'
                f'<td class="num">{fmt(t["ks"])}</td><td class="num">{fmt_p(t["p_adjusted"])}</td>'
                f"<td>{'yes' if t['differs'] else 'no'}</td></tr>"
            )
        parts.append(
            '</table><p class="small">Read the sizes, not only the p-values: with thousands of samples '
            "every small difference is significant. The shift is (sample mean - real mean) / real standard "
            "deviation (0.2 small, 0.5 medium, 0.8 large, in Cohen's terms); D is the largest gap between the "
            "two CDFs (0..1). pc1..pc3 are projections on the real features' principal axes (centred: "
            "their real mean is 0).</p>"
        )
    return _page(title, "\n".join(parts))


# -- genlab compare -------------------------------------------------------------------------
def best_runs(runs: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Row id (``key@extractor``) -> names of the best run(s) on it."""
    out: dict[str, list[str]] = {}
    ids = {rid for run in runs for rid in _rows(run["result"])}
    for rid in ids:
        maybe = [(score(_rows(run["result"])[rid]), run["name"]) for run in runs if rid in _rows(run["result"])]
        scored = [(s, name) for s, name in maybe if s is not None]
        if len(scored) >= 2:
            top = max(s for s, _ in scored)
            out[rid] = [name for s, name in scored if math.isclose(s, top, rel_tol=1e-12, abs_tol=1e-15)]
    return out


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{r['key']}@{r['extractor']}": r for r in result.get("summary", [])}


def verdict(runs: Sequence[dict[str, Any]], best: dict[str, list[str]]) -> list[str]:
    """Sentences saying which run is best, from the per-metric winners: overall wins, wins summed by
    family when the runs come from several (``family`` is whatever the runs' configs name), and FID's winner."""
    if len(runs) < 2 or not best:
        return ["Need at least two runs with comparable metrics to name a winner."]
    wins = {run["name"]: 0 for run in runs}
    ties = 0
    for names in best.values():
        if len(names) == 1:  # a tie is nobody's win
            wins[names[0]] += 1
        else:
            ties += 1
    family = {run["name"]: run.get("family") or "?" for run in runs}
    order = sorted(wins, key=lambda k: -wins[k])
    lines = [
        f"{order[0]} ({family[order[0]]}) is best on {wins[order[0]]} of {len(best)} metrics"
        + (f"; then {', '.join(f'{n} ({family[n]}): {wins[n]}' for n in order[1:])}" if order[1:] else "")
        + (f"; {ties} tied." if ties else ".")
    ]
    fams = sorted({family[n] for n in wins})
    if len(fams) > 1:
        by_family = {f: sum(wins[n] for n in wins if family[n] == f) for f in fams}
        lines.append("By family: " + ", ".join(f"{f.upper()} wins {by_family[f]}" for f in fams) + ".")
    fid = [rid for rid in best if rid.startswith("fid@")]
    if fid:
        winners = best[fid[0]]
        on = f"On FID ({fid[0].split('@', 1)[1]})"
        lines.append(f"{on} the best is {winners[0]}." if len(winners) == 1 else f"{on} {' and '.join(winners)} tie.")
    return lines


def comparability_warnings(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Why the runs' numbers are not directly comparable (other datasets, feature extractors or sample
    counts), for the page and for the command line alike."""
    out = []
    datasets = {r["result"].get("dataset") for r in runs}
    if len(datasets) > 1:
        out.append(
            f"the runs were evaluated on different datasets ({', '.join(sorted(map(str, datasets)))}): "
            "their numbers are not comparable"
        )
    # Rows without an extractor (CAS trains its own classifier) say nothing about the feature networks.
    used = {
        r["name"]: sorted({str(row["extractor"]) for row in r["result"].get("summary", []) if row.get("extractor")})
        for r in runs
    }
    if len({tuple(v) for v in used.values()}) > 1:  # rows are keyed by key@extractor: never ranked across networks
        each = "; ".join(f"{name}: {', '.join(v) or 'none'}" for name, v in used.items())
        out.append(
            f"the runs were scored with different feature extractors ({each}); a figure is only set beside "
            "figures from the same extractor (one row per metric and extractor), and rows that only one run "
            "has rank nothing: evaluate every run with the same --classifier / --inception to compare them"
        )
    ns = {r["result"].get("n") for r in runs}
    if len(ns) > 1:
        each = ", ".join(f"{r['name']} n={r['result'].get('n')}" for r in runs)
        out.append(
            f"the runs were evaluated with different sample counts ({each}); FID, precision/recall and the "
            "reference points depend on n, so compare those with care, or evaluate every run with the same "
            "-n first (genlab evaluate RUN -n N)"
        )
    return out


def strict_best(best: dict[str, list[str]], rid: str) -> str | None:
    """The one run best on row ``rid``; None when several tie (a tie, even for the worst value, is no one's best)."""
    names = best.get(rid, [])
    return names[0] if len(names) == 1 else None


def _sampled_with(result: dict[str, Any]) -> str:
    """A line under a compared run's name saying how its samples were drawn, when its model has options."""
    source = result.get("source")  # a metrics.json read back: any shape that passed its checks
    how = source.get("sampling") if isinstance(source, dict) else None
    if not isinstance(how, dict):
        return ""
    from .evaluate import describe_sampling

    return f"<br>{html.escape(describe_sampling(how))}"


def compare_html(runs: Sequence[dict[str, Any]]) -> str:
    """Runs side by side. Each run: ``{"name", "family", "preset", "dir", "result", "on_the_fly",
    "stale" (why its metrics.json was not used, or None), "samples_png" (bytes or None), "metrics_path"}``."""
    title = "genlab compare: " + ", ".join(r["name"] for r in runs)
    best = best_runs(runs)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    notes = []
    for run in runs:
        if run.get("stale"):
            notes.append(
                f"{run['name']}'s metrics.json was out of date ({run['stale']}): the current weights were "
                f"evaluated on the fly with n={run['result']['n']} samples (run `genlab evaluate {run['dir']}` "
                "to refresh it)."
            )
        elif run.get("on_the_fly"):
            notes.append(
                f"{run['name']} had no metrics.json: it was evaluated on the fly with n={run['result']['n']} "
                f"samples (run `genlab evaluate {run['dir']}` for the full n)."
            )
    # a note several runs share (e.g. all trained on the test split) is said once, naming them all
    by_note: dict[str, list[str]] = {}
    for run in runs:
        for n in run["result"].get("notes", []):
            by_note.setdefault(n, []).append(run["name"])
    notes += [f"{', '.join(names)}: {n}" for n, names in by_note.items()]
    notes += comparability_warnings(runs)
    parts.append(f"<h2>{VERDICT_HEADING}</h2>" + "".join(f"<p>{html.escape(s)}</p>" for s in verdict(runs, best)))
    parts.append(_notes(notes))
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>extractor</th><th>better</th>"
        + "".join(
            f'<th>{html.escape(r["name"])}<br><span class="small">{html.escape(str(r.get("family")))}'
            f" / {html.escape(str(r.get('preset')))}{_sampled_with(r['result'])}</span></th>"
            for r in runs
        )
        + '<th>real data<br><span class="small">floor</span></th>'
        + '<th>blurred<br><span class="small">clearly bad</span></th><th>best</th></tr>'
    )
    seen: list[str] = []
    for run in runs:
        seen += [rid for rid in _rows(run["result"]) if rid not in seen]
    for rid in seen:
        any_row = next(_rows(r["result"])[rid] for r in runs if rid in _rows(r["result"]))
        cells = []
        winner = strict_best(best, rid)
        for run in runs:
            row = _rows(run["result"]).get(rid)
            cls = ' class="num best"' if run["name"] == winner else ' class="num"'
            cells.append(f"<td{cls}>{html.escape(shown(row, row['value'])) if row else '—'}</td>")
        for which in ("real", "blurred"):
            cells.append(f'<td class="num">{html.escape(_compare_point(runs, rid, which) or "—")}</td>')
        tied = best.get(rid, [])
        said = winner or (f"tie: {', '.join(tied)}" if tied else "—")
        parts.append(
            f'<tr><td title="{html.escape(any_row["explain"])}">{html.escape(label_text(any_row))}</td>'
            f"<td>{html.escape(any_row['extractor'] or '')}</td>"
            f"<td>{html.escape(better_text(any_row['better'], any_row))}</td>"
            + "".join(cells)
            + f"<td>{html.escape(said)}</td></tr>"
        )
    guide = next((reading_guide(r["result"]) for r in runs if r["result"].get("reference_points")), "")
    parts.append(
        "</table><p class=\"small\">Hover a metric's name for what it means; a row's value is highlighted "
        "only where one run is strictly best (ties are not). "
        + html.escape(guide or "Evaluate the runs with this genlab to see reference points for real and blurred data.")
        + "</p>"
    )
    parts.append('<h2>Samples</h2><div class="runs">')
    for run in runs:
        png = run.get("samples_png")
        parts.append(
            f"<div><b>{html.escape(run['name'])}</b><br>"
            + (img_tag(png, f"samples of {run['name']}", width=300) if png else "<i>no samples.png</i>")
            + "</div>"
        )
    parts.append("</div>")
    parts.append(_training_section(runs))
    return _page(title, "\n".join(parts))


def _compare_point(runs: Sequence[dict[str, Any]], rid: str, which: str) -> str:
    """A row's reference point in compare: one value when the runs agree (same n), else each with its n."""
    seen: dict[str, list[str]] = {}
    for run in runs:
        row = _rows(run["result"]).get(rid)
        if row and which in row.get("baselines", {}):
            seen.setdefault(baseline_text(row, which), []).append(f"n={run['result'].get('n')}")
    if len(seen) <= 1:
        return next(iter(seen), "")
    return " / ".join(f"{v} ({', '.join(sorted(set(ns)))})" for v, ns in seen.items())


CROSS_FAMILY_KEYS = ("images/s", "wall-clock s", "diversity")  # what every family's run logs alike


def _cross_family_records(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures any family's run has, from its metrics.jsonl: training speed (images/s between log lines,
    from ``seconds`` and the config's batch size), wall-clock seconds, and the sample diversity of the
    progress grids."""
    records = sorted(_plottable(run.get("records") or []), key=lambda rec: rec["step"])
    train = (run.get("config") or {}).get("train") or {}
    batch = train.get("batch_size") if isinstance(train, dict) else None
    out: list[dict[str, Any]] = []
    last: tuple[float, float] | None = None
    for rec in records:
        point: dict[str, Any] = {"step": rec["step"]}
        if "seconds" in rec:
            point["wall-clock s"] = rec["seconds"]
            if last is not None and _finite(batch) and rec["seconds"] > last[1] and rec["step"] > last[0]:
                point["images/s"] = (rec["step"] - last[0]) * batch / (rec["seconds"] - last[1])
            last = (rec["step"], rec["seconds"])
        if "diversity" in rec:
            point["diversity"] = rec["diversity"]
        out.append(point)
    return out


def _training_section(runs: Sequence[dict[str, Any]]) -> str:
    """Training side by side: a table and a figure of what compares across families (speed, time,
    sample diversity over training), then each family's own losses, one figure per family."""
    parts = [
        "<h2>Training</h2><table><tr><th>run</th><th>family / preset</th><th>steps</th>"
        "<th>training time</th><th>images/s</th><th>precision</th></tr>"
    ]
    for run in runs:
        summ = run.get("summary") or {}
        secs = summ.get("seconds")
        parts.append(
            f"<tr><td>{html.escape(run['name'])}</td>"
            f"<td>{html.escape(str(run.get('family')))} / {html.escape(str(run.get('preset')))}</td>"
            f'<td class="num">{html.escape(fmt(summ.get("steps")))}</td>'
            f'<td class="num">{html.escape(fmt(secs) + " s" if _finite(secs) else "n/a")}</td>'
            f'<td class="num">{html.escape(fmt(summ.get("images_per_second")))}</td>'
            f"<td>{html.escape(str(summ.get('precision', 'n/a')))}</td></tr>"
        )
    parts.append(
        '</table><p class="small">From each run\'s summary.json (n/a: the run has not finished). Speeds compare '
        "only between runs trained on the same machine.</p>"
    )
    colors = {run["name"]: i for i, run in enumerate(runs)}
    shared = training_curves_png([(run["name"], _cross_family_records(run)) for run in runs])
    if shared:
        parts.append(
            "<h3>Every run: speed, time and sample diversity over training</h3>"
            + img_tag(shared, "training speed, time and diversity of every run")
            + '<p class="small">images/s between consecutive log lines; diversity (runs with progress grids) '
            "is the mean pairwise distance of 64 fixed samples over that of real images: 1 = as varied as "
            "real data, near 0 = collapse.</p>"
        )
    drawn = shared is not None
    families = list(dict.fromkeys(str(run.get("family")) for run in runs))
    for family in families:
        members = [run for run in runs if str(run.get("family")) == family]
        curves = training_curves_png(
            [(r["name"], r.get("records", Path(r["dir"]) / "metrics.jsonl")) for r in members],
            colors=[colors[r["name"]] for r in members],
            skip=frozenset(CROSS_FAMILY_KEYS),
        )
        if curves:
            heading = f"{family.upper()} losses" if len(families) > 1 else "Training curves"
            parts.append(f"<h3>{html.escape(heading)}</h3>" + img_tag(curves, f"training curves of the {family} runs"))
            drawn = True
    if not drawn:
        parts.append("<p><i>no metrics.jsonl in these runs</i></p>")
    return "\n".join(parts)
