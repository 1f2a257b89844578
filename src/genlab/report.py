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


def better_text(better: str) -> str:
    if better.startswith("target:"):
        return f"closer to {better.split(':', 1)[1]}"
    return BETTER_WORDS.get(better, better)


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


def training_curves_png(runs: Sequence[tuple[str, Path | list[dict[str, Any]]]]) -> bytes | None:
    """One panel per figure the runs logged in metrics.jsonl (:func:`genlab.plots.curve_keys`), one line
    per run; None if no data. Each run is (name, its metrics.jsonl) or (name, the records read from it).

    Only finite numbers are drawn: a damaged log's huge, infinite or NaN values are left out.
    """
    from . import plots
    from .io import read_jsonl

    logs = [(name, _plottable(src if isinstance(src, list) else read_jsonl(src))) for name, src in runs]
    keys = plots.curve_keys(rec for _, records in logs for rec in records)
    if not keys:
        return None
    fig, axes = plots.panel_grid(len(keys))
    for ax, key in zip(axes, keys, strict=True):
        for i, (name, records) in enumerate(logs):
            steps, values = plots.curve(records, key)
            if steps:  # a run that never logged this figure (another family's) gets no line here
                # one colour per run on every panel, even where earlier runs have no line
                ax.plot(
                    steps, values, lw=1.2, label=name, color=f"C{i % 10}", marker="o" if len(steps) < 20 else None, ms=3
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
    """The headline numbers as aligned text (what ``genlab evaluate`` prints)."""
    rows = [("metric", "value", "better", "extractor")]
    for r in result["summary"]:
        v = fmt(r["value"]) + (f" ± {fmt(r['std'])}" if "std" in r else "") + (f" of {r['of']}" if "of" in r else "")
        rows.append((r["label"], v, better_text(r["better"]), r["extractor"] or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_metrics_json(result: dict[str, Any], path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(result, indent=2, allow_nan=False) + "\n")


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
        f"{r['seconds']} s.<br>Source: {html.escape(json.dumps(src))}</p>",
        _notes(r.get("notes", [])),
    ]
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>better</th><th>extractor</th>"
        "<th>what it means</th></tr>"
    )
    for row in r["summary"]:
        v = (
            fmt(row["value"])
            + (f" ± {fmt(row['std'])}" if "std" in row else "")
            + (f" of {row['of']}" if "of" in row else "")
        )
        parts.append(
            f'<tr><td>{html.escape(row["label"])}</td><td class="num">{html.escape(v)}</td>'
            f"<td>{html.escape(better_text(row['better']))}</td><td>{html.escape(row['extractor'] or '')}</td>"
            f"<td>{html.escape(row['explain'])}</td></tr>"
        )
    parts.append("</table>")
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
            "<th>sample mean</th><th>KS distance</th><th>p (Holm)</th><th>differs</th></tr>"
        )
        for t in ks["tests"]:
            cls = ' class="best"' if not t["differs"] else ""
            parts.append(
                f'<tr{cls}><td>{html.escape(str(t["statistic"]))}</td><td class="num">{fmt(t["real_mean"])}</td>'
                f'<td class="num">{fmt(t["fake_mean"])}</td><td class="num">{fmt(t["ks"])}</td>'
                f'<td class="num">{fmt(t["p_adjusted"])}</td>'
                f"<td>{'yes' if t['differs'] else 'no'}</td></tr>"
            )
        parts.append(
            '</table><p class="small">KS distance is the largest gap between the two CDFs (0..1); '
            "with thousands of samples tiny differences become significant, so read the distance for "
            "the size of a difference. pc1..pc3 are projections on the real features' principal axes.</p>"
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
        lines.append(f"On FID ({fid[0].split('@', 1)[1]}) the best is {', '.join(best[fid[0]])}.")
    return lines


def compare_html(runs: Sequence[dict[str, Any]]) -> str:
    """Runs side by side. Each run: ``{"name", "family", "preset", "dir", "result", "on_the_fly",
    "samples_png" (bytes or None), "metrics_path"}``."""
    title = "genlab compare: " + ", ".join(r["name"] for r in runs)
    best = best_runs(runs)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    notes = []
    for run in runs:
        if run.get("on_the_fly"):
            notes.append(
                f"{run['name']} had no metrics.json: it was evaluated on the fly with n={run['result']['n']} "
                f"samples (run `genlab evaluate {run['dir']}` for the full n)."
            )
        notes += [f"{run['name']}: {n}" for n in run["result"].get("notes", [])]
    datasets = {r["result"].get("dataset") for r in runs}
    if len(datasets) > 1:
        notes.append(
            f"the runs were evaluated on different datasets ({', '.join(sorted(map(str, datasets)))}): "
            "their numbers are not comparable"
        )
    ns = {r["result"].get("n") for r in runs}
    if len(ns) > 1:
        notes.append(
            f"the runs were evaluated with different sample counts ({', '.join(map(str, sorted(ns)))}); "
            "FID and precision/recall depend on n, so compare those with care"
        )
    parts.append(f"<h2>{VERDICT_HEADING}</h2>" + "".join(f"<p>{html.escape(s)}</p>" for s in verdict(runs, best)))
    parts.append(_notes(notes))
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>extractor</th><th>better</th>"
        + "".join(
            f'<th>{html.escape(r["name"])}<br><span class="small">{html.escape(str(r.get("family")))}'
            f" / {html.escape(str(r.get('preset')))}</span></th>"
            for r in runs
        )
        + "<th>best</th></tr>"
    )
    seen: list[str] = []
    for run in runs:
        seen += [rid for rid in _rows(run["result"]) if rid not in seen]
    for rid in seen:
        any_row = next(_rows(r["result"])[rid] for r in runs if rid in _rows(r["result"]))
        cells = []
        for run in runs:
            row = _rows(run["result"]).get(rid)
            cls = ' class="num best"' if run["name"] in best.get(rid, []) else ' class="num"'
            cells.append(f"<td{cls}>{html.escape(fmt(row['value'])) if row else '—'}</td>")
        parts.append(
            f'<tr><td title="{html.escape(any_row["explain"])}">{html.escape(any_row["label"])}</td>'
            f"<td>{html.escape(any_row['extractor'] or '')}</td><td>{html.escape(better_text(any_row['better']))}</td>"
            + "".join(cells)
            + f"<td>{html.escape(', '.join(best.get(rid, [])) or '—')}</td></tr>"
        )
    parts.append(
        '</table><p class="small">Hover a metric\'s name for what it means; the best value of each row '
        "is highlighted.</p>"
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
    curves = training_curves_png([(r["name"], r.get("records", Path(r["dir"]) / "metrics.jsonl")) for r in runs])
    parts.append(
        "<h2>Training curves</h2>"
        + (img_tag(curves, "training curves") if curves else "<p><i>no metrics.jsonl in these runs</i></p>")
    )
    return _page(title, "\n".join(parts))
