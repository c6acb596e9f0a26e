"""The report of ``student ablate``: mean +- 95 % confidence interval over seeds per configuration,
the reference rows, and the files ``table.md``, ``table.csv``, ``results.json`` and ``ablation.png``.

The interval is Student's t: mean +- t(0.975, n - 1) * sd / sqrt(n) over the n seeds (none for
n = 1). "Clear of the baseline" means the whole interval lies below the constant-depth figure.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from edgedepth.common import atomic_writer, write_text_atomic
from edgedepth.student.ablate.configs import CONFIGS

METRICS = (("abs_rel", "Abs Rel"), ("rmse", "RMSE (m)"), ("a1", "δ<1.25"))
SCALED = ("ms_abs_rel", "Abs Rel, median-scaled")


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "ci95" (half-width; NaN for one value), "n", "sd"} of per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    n = int(array.size)
    mean = float(array.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "ci95": math.nan, "n": n, "sd": math.nan}
    sd = float(array.std(ddof=1))
    return {"mean": mean, "ci95": float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)), "n": n, "sd": sd}


def _cell(summary: dict[str, float] | None, digits: int = 3) -> str:
    if not summary or math.isnan(summary["mean"]):
        return "—"
    if math.isnan(summary["ci95"]):
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['ci95']:.{digits}f}"


def seed_rows(out: Path, config: str, seeds: int) -> dict[int, dict[str, float]]:
    """Per seed: the held-out Abs Rel, RMSE, delta<1.25 and median-scaled Abs Rel of a finished run."""
    rows = {}
    for seed in range(seeds):
        folder = out / "runs" / config / f"seed{seed}"
        plain, scaled = folder / "heldout.json", folder / "heldout_median.json"
        if plain.is_file() and scaled.is_file():
            data, ms = json.loads(plain.read_text()), json.loads(scaled.read_text())
            rows[seed] = {**{m: float(data[m]) for m, _ in METRICS}, SCALED[0]: float(ms["abs_rel"])}
    return rows


def summarise(out: Path, settings: Any, configs: Sequence[str]) -> dict[str, Any]:
    """Per configuration: its seeds' figures and their mean +- CI."""
    result = {}
    for config in configs:
        seeds = seed_rows(out, config, settings.seeds)
        keys = [m for m, _ in METRICS] + [SCALED[0]]
        result[config] = {
            "label": CONFIGS[config].label,
            "seeds": seeds,
            "summary": {k: mean_ci([row[k] for row in seeds.values()]) for k in keys},
        }
    return result


def _reference_summary(reference: dict[str, Any]) -> dict[str, Any]:
    if "plain" not in reference:
        return {}
    plain, scaled = reference["plain"], reference["median"]
    row = {m: {"mean": float(plain[m]), "ci95": math.nan, "n": 1} for m, _ in METRICS}
    row[SCALED[0]] = {"mean": float(scaled["abs_rel"]), "ci95": math.nan, "n": 1}
    return row


def checks(rows: dict[str, Any], references: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are stated in: the best configuration against the constant, median-
    scaled against the per-frame median, and teacher + table against the teacher."""
    if not rows:
        return {}
    best = min(rows, key=lambda c: rows[c]["summary"]["abs_rel"]["mean"])
    summary = rows[best]["summary"]
    constant = float(references["constant"]["plain"]["abs_rel"])
    per_frame_median = float(references["constant"]["median"]["abs_rel"])
    upper = summary["abs_rel"]["mean"] + (
        0 if math.isnan(summary["abs_rel"]["ci95"]) else summary["abs_rel"]["ci95"]
    )
    best_scaled = min(rows, key=lambda c: rows[c]["summary"][SCALED[0]]["mean"])
    out = {
        "best": best,
        "best_abs_rel": summary["abs_rel"]["mean"],
        "constant_abs_rel": constant,
        "best_over_constant": summary["abs_rel"]["mean"] / constant,
        "best_ci_clear_of_constant": bool(upper < constant and not math.isnan(summary["abs_rel"]["ci95"])),
        "best_median_scaled": best_scaled,
        "median_scaled_abs_rel": rows[best_scaled]["summary"][SCALED[0]]["mean"],
        "per_frame_median_abs_rel": per_frame_median,
        "median_scaled_gain": 1 - rows[best_scaled]["summary"][SCALED[0]]["mean"] / per_frame_median,
    }
    if "teacher" in rows and "teacher_lut" in rows:
        out["teacher_lut_minus_teacher"] = (
            rows["teacher_lut"]["summary"]["abs_rel"]["mean"] - rows["teacher"]["summary"]["abs_rel"]["mean"]
        )
    return out


def format_table(rows: dict[str, Any], speeds: dict[str, Any], references: dict[str, Any], fps_size) -> str:
    """The Markdown table: one row per configuration, then the reference rows."""
    size = f"{fps_size[1]}x{fps_size[0]}"
    header = [
        "configuration",
        *(label for _, label in METRICS),
        SCALED[1],
        "params",
        f"MACs {size}",
        f"fps {size}",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config, row in rows.items():
        speed = speeds.get(config, {})
        cells = [f"**{config}**: {row['label']}"]
        cells += [_cell(row["summary"][m], 2 if m == "rmse" else 3) for m, _ in METRICS]
        cells.append(_cell(row["summary"][SCALED[0]]))
        cells += [
            f"{speed['params'] / 1e6:.3f} M" if speed else "—",
            f"{speed['macs'] / 1e9:.2f} G" if speed else "—",
            f"{speed['fps']:.1f}" if speed else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for reference in references.values():
        summary = _reference_summary(reference)
        cells = [f"*reference*: {reference['label']}"]
        if not summary:
            lines.append("| " + " | ".join(cells + [reference.get("missing", "—")] + ["—"] * 6) + " |")
            continue
        cells += [_cell(summary[m], 2 if m == "rmse" else 3) for m, _ in METRICS]
        cells += [_cell(summary[SCALED[0]]), "—", "—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_csv(rows: dict[str, Any], speeds: dict[str, Any], references: dict[str, Any]) -> str:
    """table.csv: one line per configuration and reference, means and CI half-widths as numbers."""
    keys = [m for m, _ in METRICS] + [SCALED[0]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["row", "kind", "seeds", *[f"{k}{s}" for k in keys for s in ("", "_ci95")], "params", "macs", "fps"]
    )
    for config, row in rows.items():
        speed = speeds.get(config, {})
        values = [v for k in keys for v in (row["summary"][k]["mean"], row["summary"][k]["ci95"])]
        writer.writerow(
            [config, "configuration", row["summary"]["abs_rel"]["n"], *[f"{v:.6g}" for v in values],
             speed.get("params", ""), speed.get("macs", ""), f"{speed['fps']:.4g}" if speed else ""]
        )  # fmt: skip
    for key, reference in references.items():
        summary = _reference_summary(reference)
        if summary:
            values = [v for k in keys for v in (summary[k]["mean"], math.nan)]
            writer.writerow([key, "reference", 1, *[f"{v:.6g}" for v in values], "", "", ""])
    return buffer.getvalue()


def plot(rows: dict[str, Any], references: dict[str, Any], path: Path, title: str) -> None:
    """ablation.png: held-out Abs Rel (plain and median-scaled) per configuration with 95 % CI bars,
    and the reference rows as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    figure, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(names) + 4), 4.2), sharey=False)
    panels = (
        ("abs_rel", "Abs Rel (metric)", "plain"),
        (SCALED[0], "Abs Rel, median-scaled per frame", "median"),
    )
    for axis, (key, label, ref_kind) in zip(axes, panels, strict=True):
        means = [rows[n]["summary"][key]["mean"] for n in names]
        errors = [
            0 if math.isnan(rows[n]["summary"][key]["ci95"]) else rows[n]["summary"][key]["ci95"]
            for n in names
        ]
        axis.bar(range(len(names)), means, yerr=errors, capsize=4, color="#4c72b0")
        lines = []
        for ref_key, style in (("constant", "--"), ("teacher", ":")):
            reference = references.get(ref_key, {})
            if ref_kind in reference:
                value = float(reference[ref_kind]["abs_rel"])
                what = "per-frame GT median" if ref_key == "constant" and ref_kind == "median" else ref_key
                lines.append(value)
                axis.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{what} {value:.3f}")
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
        axis.set_ylabel(label)
        drawn = [m + e for m, e in zip(means, errors, strict=True)] + lines
        axis.set_ylim(0, 1.3 * max(drawn))  # headroom: the legend never covers a bar or its interval
        axis.legend(fontsize=8, loc="upper right", ncols=2)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_writer(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def write_report(out, settings, budget, configs, speeds, references, notes) -> dict[str, Any]:
    """Write table.md, table.csv, results.json and ablation.png; returns results.json's content."""
    from dataclasses import asdict

    rows = summarise(out, settings, configs)
    table = format_table(rows, speeds, references, settings.fps_size)
    found = checks(rows, references)
    head = [
        f"# student ablate: {settings.labels_dir} -> held-out {settings.eval_root}",
        "",
        f"{settings.seeds} seed(s) per configuration, mean ± 95 % CI (Student's t). {budget.describe()}.",
        "Abs Rel, RMSE and δ<1.25 against the held-out ground truth; median-scaled: each prediction",
        "scaled by median(gt)/median(prediction) first (the self-supervised protocol: structure, not scale).",
        "",
        table,
        "",
        *[f"- {note}" for note in notes],
    ]
    if found:
        head += [
            f"- best: **{found['best']}**, Abs Rel {found['best_abs_rel']:.3f} = "
            f"{found['best_over_constant']:.2f}x the constant depth's {found['constant_abs_rel']:.3f}"
            f" (95 % CI {'clear of' if found['best_ci_clear_of_constant'] else 'not clear of'} it)",
            f"- median-scaled: {found['best_median_scaled']} {found['median_scaled_abs_rel']:.3f} vs the "
            f"per-frame median's {found['per_frame_median_abs_rel']:.3f} ({found['median_scaled_gain']:+.0%} better)",
        ]
    write_text_atomic(out / "table.md", "\n".join(head) + "\n")
    write_text_atomic(out / "table.csv", format_csv(rows, speeds, references))
    results = {
        "settings": settings.to_dict(),
        "budget": asdict(budget),
        "notes": list(notes),
        "configs": rows,
        "speed": speeds,
        "references": references,
        "checks": found,
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    plot(rows, references, out / "ablation.png", f"held-out Abs Rel: {Path(settings.eval_root).name}")
    return results


__all__ = ["checks", "format_csv", "format_table", "mean_ci", "plot", "summarise", "write_report"]
