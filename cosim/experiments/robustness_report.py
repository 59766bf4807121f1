"""Outputs of the robustness benchmark: RCE columns, mRCE summary, markdown report, plots.

RCE_c = (AP_clean - AP_c) / AP_clean at IoU 0.5 (``models.metrics``); it is NaN when the clean
AP is 0 or missing. mRCE is reported twice: over the seven corruptions at the middle severity
2 (the Diff-KD table) and over all 21 corruption x severity conditions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from cosim.common.render import save  # noqa: E402
from cosim.experiments.conditions import LOSS_MODELS
from models.metrics import relative_corruption_error  # noqa: E402
from scenarios.corruptions import CORRUPTION_NAMES, SEVERITIES  # noqa: E402

MIDDLE_SEVERITY = 2
COLUMNS = [
    "kind",
    "name",
    "level",
    "label",
    "ap@0.3",
    "ap@0.5",
    "ap@0.7",
    "rce@0.5",
    "frames",
    "num_gt",
    "mean_neighbours",
    "mean_points",
    "seconds",
]
#: Filled for a model with a PKD refiner only (null otherwise): its mean gamma on the ego
#: maps, the share it skipped (adaptive steps) and its milliseconds per ego map.
REFINER_COLUMNS = ["refine_gamma", "refine_skipped", "refine_ms"]


def _rce(clean: float, value: float) -> float:
    try:
        return relative_corruption_error(clean, value)
    except ValueError:
        return math.nan


def with_rce(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """The result table: ``rows`` (one per condition, exactly one ``clean``) with ``rce@0.5``
    against the clean row, columns in :data:`COLUMNS` order."""
    clean = [r for r in rows if r["kind"] == "clean"]
    if len(clean) != 1:
        raise ValueError(f"robustness table needs exactly one clean row, got {len(clean)}")
    base = clean[0]["ap@0.5"]
    out = [{**r, "rce@0.5": _rce(base, r["ap@0.5"])} for r in rows]
    return as_table(out)


def as_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows with every :data:`COLUMNS` key (and any :data:`REFINER_COLUMNS`) as the table."""
    return pa.Table.from_pylist(
        [{**{c: r[c] for c in COLUMNS}, **{c: r.get(c) for c in REFINER_COLUMNS}} for r in rows]
    )


def summarize(table: pa.Table) -> dict[str, Any]:
    """``{"clean_ap50", "rce": {corruption: {severity: RCE}}, "mrce_sev2", "mrce_all"}``; an
    mRCE is NaN when any of its RCEs is missing or the corruptions were not run."""
    rows = table.to_pylist()
    clean = next(r for r in rows if r["kind"] == "clean")
    rce: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["kind"] == "sensor":
            rce.setdefault(r["name"], {})[int(r["level"])] = r["rce@0.5"]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values and not any(map(math.isnan, values)) else math.nan

    middle = [
        rce[n][MIDDLE_SEVERITY] for n in CORRUPTION_NAMES if MIDDLE_SEVERITY in rce.get(n, {})
    ]
    every = [v for n in CORRUPTION_NAMES for v in rce.get(n, {}).values()]
    complete = len(every) == len(CORRUPTION_NAMES) * len(SEVERITIES)
    return {
        "clean_ap50": clean["ap@0.5"],
        "rce": rce,
        "mrce_sev2": mean(middle) if len(middle) == len(CORRUPTION_NAMES) else math.nan,
        "mrce_all": mean(every) if complete else math.nan,
    }


def _f(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def render_report(table: pa.Table, title: str) -> str:
    """The markdown report: AP@0.5 / AP@0.7 / RCE per condition, RCE per corruption x
    severity, and the two mRCEs."""
    rows, summary = table.to_pylist(), summarize(table)
    refined = any(r.get("refine_ms") is not None for r in rows)
    extra = " refiner gamma | skipped | refine ms |" if refined else ""
    lines = [
        f"# {title}",
        "",
        "| kind | condition | AP@0.5 | AP@0.7 | RCE@0.5 | neighbours |" + extra,
        "|---|---|---|---|---|---|" + "---|" * (3 if refined else 0),
    ]
    for r in rows:
        line = (
            f"| {r['kind']} | {r['label']} | {_f(r['ap@0.5'])} | {_f(r['ap@0.7'])} | "
            f"{_f(r['rce@0.5'])} | {r['mean_neighbours']:.2f} |"
        )
        if refined:
            line += (
                f" {_f(r.get('refine_gamma'), 3)} | {_f(r.get('refine_skipped'), 2)} |"
                f" {_f(r.get('refine_ms'), 1)} |"
            )
        lines.append(line)
    if summary["rce"]:
        lines += [
            "",
            "## RCE@0.5 per corruption",
            "",
            "| corruption | " + " | ".join(f"severity {s}" for s in SEVERITIES) + " | mean |",
            "|---|" + "---|" * (len(SEVERITIES) + 1),
        ]
        for name, per in summary["rce"].items():
            values = [per.get(s, math.nan) for s in SEVERITIES]
            lines.append(
                f"| {name} | "
                + " | ".join(_f(v) for v in values)
                + f" | {_f(float(np.mean(values)))} |"
            )
        lines += [
            "",
            f"- mRCE (seven corruptions, severity {MIDDLE_SEVERITY}): {_f(summary['mrce_sev2'])}",
            f"- mRCE (all corruptions and severities): {_f(summary['mrce_all'])}",
        ]
    lines += [
        "",
        f"Clean AP@0.5: {_f(summary['clean_ap50'])}; RCE = (AP_clean - AP) / AP_clean.",
        "",
    ]
    return "\n".join(lines)


FAULT_AXES = (
    ("pose", "pose error sigma (m, deg)"),
    ("latency", "latency (ms)"),
    ("loss", "mean loss (%)"),
)


def _fault_series(
    rows: list[dict[str, Any]], kind: str, metric: str
) -> list[tuple[str | None, list[float], list[float]]]:
    """``(loss model or None, x, metric)`` lines of one fault kind, by level; each loss model's
    line starts at the shared lossless ``none`` row; loss levels in percent."""
    chosen = [r for r in rows if r["kind"] == kind]
    models: list[str | None] = list(LOSS_MODELS) if kind == "loss" else [None]
    out = []
    for model in models:
        line = sorted(
            (r["level"], r[metric]) for r in chosen if model is None or r["name"] in (model, "none")
        )
        if line:
            scale = 100.0 if kind == "loss" else 1.0
            out.append((model, [scale * lv for lv, _ in line], [v for _, v in line]))
    return out


def plot_faults(table: pa.Table, out: Path, title: str = "") -> Path | None:
    """AP@0.5 and AP@0.7 against pose error, latency and loss (one panel each present)."""
    rows = table.to_pylist()
    panels = [(k, x) for k, x in FAULT_AXES if any(r["kind"] == k for r in rows)]
    if not panels:
        return None
    figure, axes_list = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4), dpi=100, squeeze=False
    )
    for axes, (kind, xlabel) in zip(axes_list[0], panels, strict=True):
        for metric, style in (("ap@0.5", "o-"), ("ap@0.7", "s--")):
            for model, xs, ys in _fault_series(rows, kind, metric):
                axes.plot(xs, ys, style, label=metric.upper() + (f" {model}" if model else ""))
        axes.set_xlabel(xlabel)
        axes.set_ylabel("AP")
        axes.set_title(kind)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title or "communication faults")
    figure.tight_layout()
    return save(figure, out)


def plot_corruptions(table: pa.Table, out: Path, title: str = "") -> Path | None:
    """AP@0.5 against severity (0 = clean) per corruption."""
    rows = table.to_pylist()
    clean = next(r for r in rows if r["kind"] == "clean")["ap@0.5"]
    sensor = [r for r in rows if r["kind"] == "sensor"]
    if not sensor:
        return None
    figure, axes = plt.subplots(figsize=(7, 5), dpi=100)
    for name in CORRUPTION_NAMES:
        line = sorted((r["level"], r["ap@0.5"]) for r in sensor if r["name"] == name)
        if line:
            axes.plot(
                [0, *(lv for lv, _ in line)], [clean, *(ap for _, ap in line)], "o-", label=name
            )
    axes.set_xticks([0, *SEVERITIES])
    axes.set_xlabel("severity (0 = clean)")
    axes.set_ylabel("AP@0.5")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title or "sensor corruptions")
    figure.tight_layout()
    return save(figure, out)


def _ap_by_label(table: pa.Table) -> dict[str, float]:
    return dict(
        zip(table.column("label").to_pylist(), table.column("ap@0.5").to_pylist(), strict=True)
    )


def compare_report(tables: dict[str, pa.Table]) -> str:
    """Markdown comparing benchmark runs (name -> robustness table), one row per run: clean
    AP@0.5, AP@0.5 per corruption at severity 2, the two mRCEs; then AP@0.5 under each
    communication fault that every run has (the robustness tables in docs/results.md)."""
    if not tables:
        raise ValueError("robustness comparison needs at least one table")
    by_name = {name: (_ap_by_label(t), summarize(t)) for name, t in tables.items()}
    lines: list[str] = []
    middle = [f"{n}/{MIDDLE_SEVERITY}" for n in CORRUPTION_NAMES]
    if all(label in aps for aps, _ in by_name.values() for label in middle):
        lines += [
            "| model | clean | "
            + " | ".join(CORRUPTION_NAMES)
            + f" | mRCE sev {MIDDLE_SEVERITY} | mRCE all |",
            "|---|" + "---|" * (len(CORRUPTION_NAMES) + 3),
        ]
        for name, (aps, summary) in by_name.items():
            cells = [
                aps["clean"],
                *(aps[label] for label in middle),
                summary["mrce_sev2"],
                summary["mrce_all"],
            ]
            lines.append(f"| {name} | " + " | ".join(_f(c, 3) for c in cells) + " |")
        lines.append("")
    first = next(iter(tables.values()))
    faults = [
        r["label"]
        for r in first.to_pylist()
        if r["kind"] in ("pose", "latency", "loss")
        and float(r["level"]) > 0
        and all(r["label"] in aps for aps, _ in by_name.values())
    ]
    if faults:
        lines += [
            "| model | clean | " + " | ".join(faults) + " |",
            "|---|" + "---|" * (len(faults) + 1),
        ]
        for name, (aps, _) in by_name.items():
            lines.append(
                f"| {name} | "
                + " | ".join(_f(aps[label], 3) for label in ["clean", *faults])
                + " |"
            )
        lines.append("")
    lines.append(
        "AP@0.5 (3 decimals); mRCE = mean of (AP_clean - AP) / AP_clean over the corruptions."
    )
    return "\n".join(lines) + "\n"


def plot_compare(tables: dict[str, pa.Table], out: Path) -> Path:
    """AP@0.5 of several runs against each fault level: pose error, latency, loss (Bernoulli
    solid, bursty dashed) and sensor severity (mean over the seven corruptions, 0 = clean)."""
    if not tables:
        raise ValueError("robustness comparison needs at least one table")
    panels = (*FAULT_AXES, ("sensor", "corruption severity (mean of seven)"))
    figure, axes_list = plt.subplots(1, len(panels), figsize=(18, 4), dpi=100)
    for index, (name, table) in enumerate(tables.items()):
        color = f"C{index % 10}"
        rows = table.to_pylist()
        for axes, (kind, _) in zip(axes_list[:-1], FAULT_AXES, strict=True):
            for model, xs, ys in _fault_series(rows, kind, "ap@0.5"):
                bursty = model == "gilbert_elliott"
                axes.plot(
                    xs,
                    ys,
                    "s--" if bursty else "o-",
                    color=color,
                    label=f"{name} (bursty)" if bursty else name,
                )
        clean = next(r for r in rows if r["kind"] == "clean")["ap@0.5"]
        sensor = [r for r in rows if r["kind"] == "sensor"]
        levels = sorted({int(r["level"]) for r in sensor})
        means = [
            float(np.mean([r["ap@0.5"] for r in sensor if int(r["level"]) == lv])) for lv in levels
        ]
        axes_list[-1].plot([0, *levels], [clean, *means], "o-", color=color, label=name)
    for axes, (kind, xlabel) in zip(axes_list, panels, strict=True):
        axes.set_xlabel(xlabel)
        axes.set_ylabel("AP@0.5")
        axes.set_title(kind)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    return save(figure, out)


def write_outputs(table: pa.Table, folder: Path, title: str) -> list[Path]:
    """``robustness.parquet``, ``report.md``, ``faults.png``, ``corruptions.png`` in
    ``folder`` (plots only for the kinds run); returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "robustness.parquet")
    (folder / "report.md").write_text(render_report(table, title))
    written = [folder / "robustness.parquet", folder / "report.md"]
    for plot, name in ((plot_faults, "faults.png"), (plot_corruptions, "corruptions.png")):
        path = plot(table, folder / name, title)
        if path is not None:
            written.append(path)
    return written
