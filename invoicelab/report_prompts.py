"""The prompt-set section of the HTML report: which axis moves which field, and the confirmed winner.

It formats ``summary["prompt_set"]`` (``prompt_analytics.prompt_set_view``) as one section of the
report in ``report_html``'s shape: a forest plot of the axis effects with one panel per field, the
effects as a level x field matrix and in full, the interactions with the model where several ran, and
the winner judged on the confirmation documents with the sentence saying how much choosing it on the
selection documents overstated its accuracy. It must never compute a statistic, put an external URL
in the page, or emit text unescaped (only matplotlib's SVG, which escapes its labels, is markup);
matplotlib is imported only inside the plot function.
"""

from __future__ import annotations

from typing import Any

from invoicelab import plots
from invoicelab.report_html import _fmt, _section, _table, _test_columns

SECTION_ID = "prompt-set"


def prompt_set_section(summary: dict) -> dict | None:
    """The report section of ``summary["prompt_set"]``; None when the summary has none."""
    view = summary.get("prompt_set")
    if not isinstance(view, dict):
        return None
    effects, fields = view.get("effects") or [], [*summary.get("fields", []), "all"]
    several = len({e.get("variant") for e in effects}) > 1
    rows = _rows(effects, several)
    intro = [_effects_intro(summary, view, len(effects)), *_winner_lines(view), _split_line(view)]
    tables = [_matrix(effects, rows, fields), _effects_table(summary, effects, several),
              _interactions_table(summary, view.get("interactions") or []), *_winner_tables(summary, view)]
    figure = axis_forest(effects, rows, [f for f in fields if any(e.get("field") == f for e in effects)])
    return _section(SECTION_ID, "Prompt set: axis effects and the confirmed winner", [t for t in intro if t],
                    [figure], [t for t in tables if t])


def _rows(effects: list[dict], several: bool) -> list[tuple[tuple, str]]:
    """(variant, axis, level) of each effect row, in the summary's order, with its label."""
    keys = dict.fromkeys((e.get("variant"), e.get("axis"), e.get("level")) for e in effects)
    refs = {(e.get("variant"), e.get("axis"), e.get("level")): e.get("reference_level") for e in effects}
    return [(k, (f"{k[0]} · " if several else "") + f"{k[1]}: {k[2]} vs {refs[k]}") for k in keys]


def _effects_intro(summary: dict, view: dict, n: int) -> str:
    method = summary.get("correction_name") or summary.get("correction", "holm")
    return (f"Each effect is the accuracy at an axis level minus at the reference level (the baseline prompt "
            f"{view.get('baseline', '')}'s), on the same documents, with prompts matched on the other axes' "
            "levels; values from the rules fallback are left out. Whiskers are 95% bootstrap intervals over "
            f"documents; an effect is coloured (and starred) when a paired permutation test says it is "
            f"significant at alpha = {summary.get('alpha', 0.05)} after the {method} correction over all {n} "
            "effects. A single interval of an axis that does nothing misses 0 about one time in twenty.")


def _winner_lines(view: dict) -> list[str]:
    lines = []
    for w in view.get("winners") or ([view["winner"]] if view.get("winner") else []):
        if not w.get("winner"):
            continue
        who = f"{w.get('variant')}: " if len(view.get("winners") or []) > 1 else ""
        sentence = w.get("sentence", "")
        lines.append(f"{who}{sentence[:1].upper()}{sentence[1:]}: {w['winner']} scored "
                     f"{_fmt(w.get('selection_accuracy'), 'pct')} on the {w.get('n_selection')} selection documents "
                     f"it was picked on and {_fmt(w.get('confirmation_accuracy'), 'pct')} on the "
                     f"{w.get('n_confirmation')} confirmation documents. "
                     + _against_baseline(w))
    return lines


def _against_baseline(w: dict) -> str:
    if w.get("winner") == w.get("baseline"):
        return "It is the baseline prompt itself."
    verdict = "significant" if w.get("significant") else "not significant"
    return (f"Against the baseline {w.get('baseline')} on the confirmation documents: {_diff(w, 'diff_vs_baseline')} "
            f"(adjusted p = {_fmt(w.get('p_adjusted'), 'p')}, {verdict}).")


def _split_line(view: dict) -> str:
    split = view.get("split") or {}
    if not split:
        return ""
    how = "stratified by the documents' labels" if split.get("stratified") else "not stratified (no labels)"
    return (f"Documents were split with seed {split.get('seed')} into {len(split.get('selection', []))} for selection "
            f"and {len(split.get('confirmation', []))} for confirmation, {how}; the effects use all of them.")


def _diff(t: dict, key: str = "effect") -> str:
    bounds = [f"{100 * t[k]:+.1f}" for k in ("low", "high") if isinstance(t.get(k), (int, float))]
    return _fmt(t.get(key), "pp") + (f" [{bounds[0]}, {bounds[1]}]" if len(bounds) == 2 else "")


def _matrix(effects: list[dict], rows: list[tuple[tuple, str]], fields: list[str]) -> dict | None:
    """Level x field: the effect in points, starred when significant; rows with a significant effect highlighted."""
    cell = {(e.get("variant"), e.get("axis"), e.get("level"), e.get("field")): e for e in effects}
    fields = [f for f in fields if any(k[3] == f for k in cell)]
    if not rows or not fields:
        return None

    def show(key: tuple, field: str) -> str:
        e = cell.get((*key, field), {})
        return _fmt(e.get("effect"), "pp") + ("*" if e.get("significant") else "")

    table_rows = [{"label": label, "key": key} for key, label in rows]
    columns = [("axis level", lambda r: r["label"])]
    columns += [(f, lambda r, f=f: show(r["key"], f)) for f in fields]
    flag = lambda r: "win" if any(cell.get((*r["key"], f), {}).get("significant") for f in fields) else ""
    return _table(columns, table_rows, "effect on accuracy per field, in points (* significant)", 1, flag)


def _effects_table(summary: dict, effects: list[dict], several: bool) -> dict | None:
    if not effects:
        return None
    spec = [("variant", "variant", "text")] * several + [
        ("axis", "axis", "text"), ("level", "level", "text"), ("reference_level", "vs", "text"),
        ("field", "field", "text"), ("n", "docs", "int"), ("pairs", "pairs", "int"),
        ("excluded_fallback", "excl. fallback", "int"), ("reference_accuracy", "accuracy at vs", "pct"),
        ("level_accuracy", "accuracy at level", "pct")]
    columns = [(title, lambda e, k=key, h=how: _fmt(e.get(k), h)) for key, title, how in spec]
    columns += _p_columns(summary, "effect [95% CI]")
    return _table(columns, effects, "every effect", len(spec) - 5, _colour)


def _interactions_table(summary: dict, inter: list[dict]) -> dict | None:
    if not inter:
        return None
    spec = [("a_variant", "A", "text"), ("b_variant", "B", "text"), ("axis", "axis", "text"),
            ("level", "level", "text"), ("reference_level", "vs", "text"), ("field", "field", "text"),
            ("n", "docs", "int"), ("effect_a", "effect in A", "pp"), ("effect_b", "effect in B", "pp")]
    columns = [(title, lambda e, k=key, h=how: _fmt(e.get(k), h)) for key, title, how in spec]
    columns += _p_columns(summary, "B − A [95% CI]")
    caption = "interactions with the model: does a level's effect differ between two variants (paired by document)"
    return _table(columns, inter, caption, 6, _colour)


def _p_columns(summary: dict, title: str) -> list[tuple[str, Any]]:
    method = summary.get("correction_name") or summary.get("correction", "holm")
    return [(title, _diff), ("p", lambda e: _fmt(e.get("p_value"), "p")),
            (f"adjusted p ({method})", lambda e: _fmt(e.get("p_adjusted"), "p")),
            ("significant", lambda e: "yes" if e.get("significant") else "no")]


def _colour(e: dict) -> str:
    if not e.get("significant"):
        return ""
    return "win" if (e.get("effect") or 0) > 0 else "loss"


def _winner_tables(summary: dict, view: dict) -> list[dict]:
    winners = [w for w in view.get("winners") or ([view["winner"]] if view.get("winner") else []) if w.get("winner")]
    if not winners:
        return []
    columns = [("variant", lambda w: _fmt(w.get("variant"), "text")), ("winner", lambda w: w["winner"]),
               ("picked from", lambda w: _fmt(w.get("candidates"), "int")),
               ("selection docs", lambda w: _fmt(w.get("n_selection"), "int")),
               ("selection accuracy", lambda w: _fmt(w.get("selection_accuracy"), "pct")),
               ("confirmation docs", lambda w: _fmt(w.get("n_confirmation"), "int")),
               ("confirmed accuracy [95% CI]", _confirmed),
               ("overstated by", lambda w: _fmt(w.get("optimism"), "pp")),
               ("baseline", lambda w: _fmt(w.get("baseline"), "text")),
               ("baseline confirmed", lambda w: _fmt(w.get("baseline_confirmation_accuracy"), "pct")),
               ("winner − baseline [95% CI]", lambda w: _diff(w, "diff_vs_baseline")),
               ("adjusted p", lambda w: _fmt(w.get("p_adjusted"), "p"))]
    out = [_table(columns, winners, "the winner, picked on the selection documents and judged on the others", 2)]
    for w in winners:
        tests = w.get("tests") or []
        if tests:
            caption = f"{w.get('variant')}: winner (B) against the baseline (A) per field, confirmation documents"
            out.append(_table(_test_columns(summary, tests), tests, caption, 3,
                              lambda t: "win" if t.get("significant") else ""))
    return out


def _confirmed(w: dict) -> str:
    low, high = w.get("confirmation_low"), w.get("confirmation_high")
    interval = f" [{_fmt(low, 'pct')}, {_fmt(high, 'pct')}]" if low is not None and high is not None else ""
    return _fmt(w.get("confirmation_accuracy"), "pct") + interval


def axis_forest(effects: list[dict[str, Any]], rows: list[tuple[tuple, str]], fields: list[str]) -> str:
    """Axis effects as dots and whiskers, one panel per field, one row per (variant, axis, level).

    Args:
        effects: ``prompt_set_view``'s effects (effect, low, high, significant, and the keys).
        rows: ((variant, axis, level), label) in drawing order.
        fields: Panel order (e.g. the fields, then "all").

    Returns:
        The SVG element, or "" when no effect has a value.
    """
    cell = {(e.get("variant"), e.get("axis"), e.get("level"), e.get("field")): e for e in effects}
    if not rows or not fields or not any(plots._finite(e.get("effect")) for e in effects):
        return ""
    with plots._rc():
        width = 1.2 + 0.08 * max(len(label) for _, label in rows) + 1.9 * len(fields)
        fig = plots._figure(min(width, 13.0), 1.0 + 0.3 * len(rows))
        axes = fig.subplots(1, len(fields), sharey=True, sharex=True, squeeze=False)[0]
        for ax, field in zip(axes, fields):
            for i, (key, _) in enumerate(rows):
                e = cell.get((*key, field), {})
                if not plots._finite(e.get("effect")):
                    continue
                colour = (plots._BLUE if e["effect"] > 0 else plots._RED) if e.get("significant") else plots._GREY
                if plots._finite(e.get("low")) and plots._finite(e.get("high")):
                    ax.plot([e["low"], e["high"]], [i, i], color=colour, linewidth=1.6)
                ax.plot([e["effect"]], [i], "o", color=colour, markersize=5)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_title(field, loc="left")
            ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:+.0f}")
        axes[0].set_yticks(range(len(rows)), [label for _, label in rows])
        axes[0].invert_yaxis()
        fig.supxlabel("accuracy at the level minus at the reference, points, with 95% interval", fontsize=9)
        return plots._svg(fig)
