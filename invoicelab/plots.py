"""The HTML report's figures: matplotlib charts returned as inline SVG strings.

Why matplotlib SVG rather than plotly: a plotly report inlines about 4.6 MB of JavaScript per file,
while SVG keeps each figure a few tens of kilobytes with no script that could fail to load or run.

Each function takes plain lists of dicts (the summary's own rows, each with a ``label`` added by the
caller) or a frame, and returns the ``<svg>`` element as a string; ``""`` when there is nothing to
draw. Each ``matplotlib.figure.Figure`` gets its own Agg canvas and is written by matplotlib's SVG
backend; pyplot and ``matplotlib.use`` are never called, so no GUI backend, no global figure list,
and no change to the backend of a program (or notebook) that imports this module.
This module must never read or write files, compute a statistic, or import matplotlib at module
level (the CLI imports the report lazily, and ``invoicelab --help`` must stay instant).
"""

from __future__ import annotations

import io
import math
import numbers
from typing import Any

# Status colours of the error breakdown, in stacking order (right first, failures after).
STATUS_COLOURS = {"right": "#2e7d32", "wrong": "#c62828", "missing": "#9e9e9e", "invalid": "#ef6c00",
                  "not_in_text": "#6a1b9a", "error": "#212121"}
_RC = {"svg.fonttype": "none",  # text stays text: smaller files, selectable, and the browser's fonts
       "font.size": 9, "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Arial"],
       "axes.spines.top": False, "axes.spines.right": False}
_BLUE, _GREY, _RED = "#1565c0", "#9e9e9e", "#c62828"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, for this figure only
    return fig


def _svg(fig) -> str:
    """The figure as an ``<svg>`` element (no XML prolog, no DOCTYPE, no metadata with URLs)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _rc():
    import matplotlib

    return matplotlib.rc_context(_RC)


def _finite(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def heatmap(labels: list[str], fields: list[str], values: list[list[float | None]]) -> str:
    """Accuracy per (row, field) as coloured cells with the percentage printed in each.

    Args:
        labels: One name per row (a variant, a prompt, or both).
        fields: Column names.
        values: ``values[i][j]`` is the accuracy (0..1) of row i on field j; None or NaN for no data.

    Returns:
        The SVG element, or "" when there are no rows or fields.
    """
    if not labels or not fields:
        return ""
    import numpy as np

    grid = np.array([[v if _finite(v) else np.nan for v in row] for row in values], dtype=float)
    with _rc():
        fig = _figure(1.6 + 0.1 * max(map(len, labels)) + 0.95 * len(fields), 0.9 + 0.38 * len(labels))
        ax = fig.subplots()
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(fields)), fields, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        for (i, j), v in np.ndenumerate(grid):
            text = "–" if np.isnan(v) else f"{100 * v:.0f}%"
            ax.text(j, i, text, ha="center", va="center", color="white" if v < 0.25 or v > 0.8 else "black")
        fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy", format=lambda x, _: f"{100 * x:.0f}%")
        return _svg(fig)


def error_breakdown(errors: list[dict[str, Any]], fields: list[str]) -> str:
    """One horizontal bar per (field, label): the share of values in each outcome, stacked.

    Args:
        errors: Rows with ``label``, ``field`` and a count per status of ``STATUS_COLOURS``.
        fields: Field order of the bars; fields not listed come after, by name.

    Returns:
        The SVG element, or "" when there are no rows.
    """
    order = {f: i for i, f in enumerate(fields)}
    # A stable sort: labels keep the summary's order within each field.
    rows = sorted(errors, key=lambda r: (order.get(r["field"], len(order)), r["field"]))
    if not rows:
        return ""
    several = len({r["label"] for r in rows}) > 1
    names = [f"{r['field']} · {r['label']}" if several else r["field"] for r in rows]
    with _rc():
        fig = _figure(8.5, 0.9 + 0.3 * len(rows))
        ax = fig.subplots()
        left = [0.0] * len(rows)
        for status, colour in STATUS_COLOURS.items():
            shares = [_share(r, status) for r in rows]
            ax.barh(range(len(rows)), shares, left=left, color=colour, label=status.replace("_", " "), height=0.7)
            left = [a + b for a, b in zip(left, shares)]
        ax.set_yticks(range(len(rows)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda x, _: f"{100 * x:.0f}%")
        ax.set_xlabel("share of values with ground truth")
        ax.legend(ncols=len(STATUS_COLOURS), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        return _svg(fig)


def _share(row: dict[str, Any], status: str) -> float:
    total = sum(row.get(s) or 0 for s in STATUS_COLOURS)
    return (row.get(status) or 0) / total if total else 0.0


def pareto(points: list[tuple[float, float]], x_higher_better: bool) -> list[bool]:
    """Which points no other point beats: higher y (accuracy), and higher or lower x as asked."""
    sign = 1 if x_higher_better else -1

    def beats(p, q):  # p at least as good as q on both axes and better on one
        return p[1] >= q[1] and sign * p[0] >= sign * q[0] and (p[1] > q[1] or p[0] != q[0])

    return [not any(beats(p, q) for p in points) for q in points]


def frontier(points: list[dict[str, Any]], x: str, x_label: str, x_higher_better: bool,
             size: str | None = None) -> str:
    """Accuracy against one cost axis, Pareto points marked, connected and labelled.

    Args:
        points: Rows with ``label``, ``accuracy``, ``x`` and, when given, ``size`` (bytes) and ``pareto``.
        x: The key of the horizontal axis (e.g. ``docs_per_s`` or ``cost_per_1000``).
        x_label: Its axis title.
        x_higher_better: Whether a larger x is better (throughput) or worse (cost).
        size: Key giving marker area (peak memory in bytes), or None for equal markers.

    Returns:
        The SVG element, or "" when no point has both coordinates.
    """
    pts = [p for p in points if _finite(p.get(x)) and _finite(p.get("accuracy"))]
    if not pts:
        return ""
    xy = [(p[x], p["accuracy"]) for p in pts]
    # The summary's own flag where it has one (its frontier may weigh more axes); else this plot's 2-D front.
    own = pareto(xy, x_higher_better)
    front = [bool(p["pareto"]) if x == "docs_per_s" and "pareto" in p else f for p, f in zip(pts, own)]
    with _rc():
        fig = _figure(6.0, 3.9)  # two fit side by side in the report
        ax = fig.subplots()
        areas = _areas(pts, size)
        ax.scatter(*zip(*xy), s=areas, c=[_BLUE if f else _GREY for f in front], alpha=0.75,
                   edgecolors="black", linewidths=0.5, zorder=3)
        line = sorted((xy[i] for i, f in enumerate(front) if f))
        if len(line) > 1:
            ax.plot(*zip(*line), color=_BLUE, linewidth=1, linestyle="--", zorder=2, label="Pareto front")
            ax.legend(frameon=False, loc="best")
        for p, (px, py), area in zip(pts, xy, areas):
            mem = f" ({p[size] / 2**30:.1f} GiB)" if size and _finite(p.get(size)) else ""
            # Offset by the marker's radius (area is in points squared) so the label clears its dot.
            ax.annotate(p["label"] + mem, (px, py), xytext=(math.sqrt(area) / 2 + 3, 0), textcoords="offset points",
                        fontsize=8, va="center")
        xs = [v for v, _ in xy]
        wide = min(xs) > 0 and max(xs) / min(xs) > 100  # e.g. rules at 1,000 docs/s beside models at 0.5
        if wide:
            ax.set_xscale("log")
        ax.set_xlabel(x_label + ("" if x_higher_better else " (lower is better)") + (", log scale" if wide else ""))
        ax.set_ylabel("accuracy")
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.margins(0.15)
        if size:
            ax.set_title("marker area: peak memory", loc="left", fontsize=8, color="#555")
        return _svg(fig)


def _areas(points: list[dict[str, Any]], size: str | None) -> list[float]:
    values = [p.get(size) if size else None for p in points]
    finite = [v for v in values if _finite(v)]
    if not finite or max(finite) <= 0:
        return [60.0] * len(points)
    return [40 + 500 * v / max(finite) if _finite(v) else 60.0 for v in values]


def forest(tests: list[dict[str, Any]], x_label: str) -> str:
    """Each difference with its interval as a dot and whisker; significant ones coloured.

    Args:
        tests: Rows with ``label``, ``diff``, ``low``, ``high`` and ``significant``.
        x_label: What the difference measures.

    Returns:
        The SVG element, or "" when no row has a difference.
    """
    rows = [t for t in tests if _finite(t.get("diff"))]
    if not rows:
        return ""
    with _rc():
        fig = _figure(7.5, 0.9 + 0.3 * len(rows))
        ax = fig.subplots()
        for i, t in enumerate(rows):
            colour = (_BLUE if t["diff"] > 0 else _RED) if t.get("significant") else _GREY
            low, high = (t.get("low"), t.get("high"))
            if _finite(low) and _finite(high):
                ax.plot([low, high], [i, i], color=colour, linewidth=1.6)
            ax.plot([t["diff"]], [i], "o", color=colour, markersize=5)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [t["label"] for t in rows])
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:+.0f} pp")
        ax.set_xlabel(x_label)
        return _svg(fig)


def ranking(rows: list[dict[str, Any]]) -> str:
    """Accuracy per entry with its interval, best first (dot and whisker).

    Args:
        rows: Rows with ``label``, ``accuracy``, ``low``, ``high`` and ``rank``, in any order.

    Returns:
        The SVG element, or "" when no row has an accuracy.
    """
    ordered = sorted((r for r in rows if _finite(r.get("accuracy"))), key=lambda r: (r.get("rank") or 0))
    if not ordered:
        return ""
    bars = [{"label": f"{r.get('rank', '')}. {r['label']}", "diff": r["accuracy"], "low": r.get("low"),
             "high": r.get("high"), "significant": False} for r in ordered]
    with _rc():
        fig = _figure(7.5, 0.9 + 0.32 * len(bars))
        ax = fig.subplots()
        for i, b in enumerate(bars):
            if _finite(b["low"]) and _finite(b["high"]):
                ax.plot([b["low"], b["high"]], [i, i], color=_BLUE, linewidth=1.6)
            ax.plot([b["diff"]], [i], "o", color=_BLUE, markersize=5)
        ax.set_yticks(range(len(bars)), [b["label"] for b in bars])
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.set_xlabel("accuracy with 95% interval")
        return _svg(fig)


def trends(history, fields: list[str]) -> str:
    """Accuracy per field over past runs: one panel per field, one line per label.

    Args:
        history: A frame with ``finished_at``, ``label``, ``field`` and ``accuracy``.
        fields: The fields to draw, in panel order.

    Returns:
        The SVG element, or "" when the frame holds fewer than two runs.
    """
    import pandas as pd
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    if history is None or history.empty or history["finished_at"].nunique() < 2:
        return ""
    frame = history.assign(finished_at=pd.to_datetime(history["finished_at"], utc=True, errors="coerce"))
    panels = [f for f in fields if f in set(frame["field"])] or sorted(set(frame["field"]))
    cols = min(4, len(panels))
    with _rc():
        fig = _figure(3.0 * cols, 2.5 * math.ceil(len(panels) / cols))
        axes = fig.subplots(math.ceil(len(panels) / cols), cols, squeeze=False).ravel()
        for ax, field in zip(axes, panels):
            for label, g in frame[frame["field"] == field].sort_values("finished_at").groupby("label", sort=False):
                ax.plot(g["finished_at"], g["accuracy"], marker="o", markersize=3, label=label)
            ax.set_title(field, loc="left")
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
            ax.xaxis.set_major_locator(AutoDateLocator(maxticks=4))
            ax.xaxis.set_major_formatter(ConciseDateFormatter(ax.xaxis.get_major_locator()))
            ax.tick_params(axis="x", labelsize=7)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), frameon=False)
        return _svg(fig)
