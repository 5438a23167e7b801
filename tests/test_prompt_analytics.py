"""Prompt-set analytics against planted effects: the axis that matters is found, the others are not,
the winner is confirmed on documents it was not picked on, and picking the best of many overstates.

Result rows are simulated (no model) and go through the real ``metrics.outcomes``: each value is right
with a probability that depends on the prompt's axis levels (and on a per-document difficulty that
every prompt shares, as real documents do), so the true effects are known.
"""

from __future__ import annotations

import math
import re
from itertools import product

import numpy as np
import pandas as pd
import pytest
from browser import missing_reason, open_pages

from invoicelab.config import FieldSpec
from invoicelab.metrics import outcomes
from invoicelab.prompt_analytics import (
    axis_effects,
    axis_interactions,
    honest_winner,
    optimism_sentence,
    prompt_set_view,
    split_documents,
)

FIELDS = ["invoice_number", "invoice_date", "total", "company"]
SPECS = {f: FieldSpec() for f in FIELDS}
AXES = {"style": ["terse", "desc"], "examples": ["ex0", "ex1"], "format": ["json", "lines"]}
PLANTED = {"ex0": 0.4, "ex1": 0.7}  # accuracy by the examples axis; style and format do nothing


def prompt_set(axes: dict[str, list[str]] = AXES) -> dict[str, dict[str, str]]:
    """{prompt id: {axis: level}} of the full grid, ids as the generator names them."""
    return {"axes." + "-".join(combo): dict(zip(axes, combo)) for combo in product(*axes.values())}


def simulate(seed: int, rate, n_docs: int = 60, variants: tuple[str, ...] = ("m",), doc_sd: float = 0.8,
             axes_of: dict | None = None, fallback=None) -> pd.DataFrame:
    """Outcomes of result rows whose values are right with probability ``rate(variant, axes)`` on the logit
    scale shifted by the document's difficulty; ``fallback(prompt, field)`` marks values the rules filled in."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, doc_sd, n_docs)
    rows = []
    for variant in variants:
        for prompt, axes in (axes_of or prompt_set()).items():
            p = rate(variant, axes)
            for i in range(n_docs):
                chance = 1 / (1 + math.exp(-(math.log(p / (1 - p)) + difficulty[i])))
                row = {"doc_id": f"doc{i:03d}", "variant": variant, "prompt": prompt, "error": None,
                       "fallback_fields": [f for f in FIELDS if fallback and fallback(prompt, f)]}
                for f in FIELDS:
                    right = bool(rng.random() < chance)
                    truth = f"{f}-{i}"
                    row |= {f"pred_{f}": truth if right else "wrong", f"truth_{f}": truth, f"gt_{f}": truth,
                            f"match_{f}": right}
                rows.append(row)
    return outcomes(pd.DataFrame(rows), SPECS)


def examples_only(variant, axes) -> float:
    return PLANTED[axes["examples"]]


def equal(variant, axes) -> float:
    return 0.6


def by(effects, **match) -> list[dict]:
    return [e for e in effects if all(e[k] == v for k, v in match.items())]


# ---------------------------------------------------------------- axis effects


def test_planted_axis_is_found_and_the_others_are_not():
    effects = axis_effects(simulate(0, examples_only), prompt_set(), FIELDS, n_boot=1000, seed=0)
    assert len(effects) == 3 * 5  # three axes with one non-reference level each, four fields and "all"
    for e in by(effects, axis="examples"):
        assert e["level"] == "ex1" and e["reference_level"] == "ex0"
        assert e["low"] > 0 and e["p_adjusted"] < 0.05 and e["significant"], e
        assert 0.15 < e["effect"] < 0.45, e  # planted: +30 points before the document difficulty bends it
    for e in by(effects, axis="style") + by(effects, axis="format"):
        # No effect after Holm. A single 95% interval of a null effect misses 0 one time in twenty (here
        # style's over all fields does, at unadjusted p = 0.008, adjusted 0.08): the coverage of the null
        # intervals is checked over many runs below, not interval by interval.
        assert e["p_adjusted"] > 0.05 and not e["significant"], e
        assert abs(e["effect"]) < 0.1, e
    for e in by(effects, field="all"):
        assert e["n"] == 60 and e["pairs"] == 60 * 4 * 4  # 4 matched cells of the other two axes, 4 fields


def test_false_positives_stay_rare_over_seeds():
    """Over ten simulated runs: the planted effect every time; a null effect called significant after
    Holm in at most one run (its family-wise rate is at most 5%); null 95% intervals cover 0 about 95%."""
    found, runs_with_false, covered, null = 0, 0, 0, 0
    for seed in range(10):
        effects = axis_effects(simulate(100 + seed, examples_only), prompt_set(), FIELDS, n_boot=400, seed=seed,
                               n_perm=2000)
        found += all(e["significant"] for e in by(effects, axis="examples"))
        nulls = [e for e in effects if e["axis"] != "examples"]
        runs_with_false += any(e["significant"] for e in nulls)
        covered += sum(e["low"] <= 0 <= e["high"] for e in nulls)
        null += len(nulls)
    assert found == 10
    assert runs_with_false <= 1
    assert covered / null >= 0.88, (covered, null)


def test_matched_contrasts_by_hand():
    """Two documents, one field, axes A and B; A does nothing, B costs what the table says.

    doc0: a0b0=1 a0b1=0 a1b0=1 a1b1=0    doc1: a0b0=1 a0b1=1 a1b0=1 a1b1=0
    B (b1 - b0, matched on A): doc0 (0-1 + 0-1)/2 = -1, doc1 (1-1 + 0-1)/2 = -0.5 -> -0.75 over 4+4 pairs.
    A (a1 - a0, matched on B): doc0 (1-1 + 0-0)/2 = 0, doc1 (1-1 + 0-1)/2 = -0.5 -> -0.25.
    """
    right = {("doc0", "a0", "b0"): 1, ("doc0", "a0", "b1"): 0, ("doc0", "a1", "b0"): 1, ("doc0", "a1", "b1"): 0,
             ("doc1", "a0", "b0"): 1, ("doc1", "a0", "b1"): 1, ("doc1", "a1", "b0"): 1, ("doc1", "a1", "b1"): 0}
    out = tiny_outcomes(right)
    axes_of = {f"{a}-{b}": {"A": a, "B": b} for a in ("a0", "a1") for b in ("b0", "b1")}
    effects = {(e["axis"], e["field"]): e for e in axis_effects(out, axes_of, ["total"], n_boot=200)}
    assert effects[("B", "total")]["effect"] == pytest.approx(-0.75)
    assert effects[("A", "total")]["effect"] == pytest.approx(-0.25)
    assert effects[("A", "all")]["pairs"] == 4 and effects[("A", "all")]["n"] == 2


def test_a_sampled_grid_does_not_leak_another_axis_into_one_that_does_nothing():
    """B has a large effect, A none; the a1-b0 prompt was not sampled. Comparing A's level means would
    credit A with B's effect (a1 exists only with b1); matching on B compares a1-b1 with a0-b1 only."""
    axes_of = {p: a for p, a in prompt_set({"A": ["a0", "a1"], "B": ["b0", "b1"]}).items() if p != "axes.a1-b0"}
    out = simulate(3, lambda v, axes: 0.9 if axes["B"] == "b0" else 0.3, axes_of=axes_of)
    effects = axis_effects(out, axes_of, FIELDS, n_boot=300)
    a = by(effects, axis="A", field="all")[0]
    assert a["pairs"] == 60 * 4  # only the b1 cell is matched
    assert abs(a["effect"]) < 0.08 and a["p_adjusted"] > 0.05, a
    b = by(effects, axis="B", field="all")[0]
    assert b["effect"] < -0.4 and b["significant"], b


def test_fallback_values_are_taken_out_and_counted():
    """Every total of the ex0 prompts came from the rules fallback: no total pair is left to compare."""
    out = simulate(4, examples_only, fallback=lambda prompt, f: f == "total" and "-ex0-" in prompt)
    effects = axis_effects(out, prompt_set(), FIELDS, n_boot=200)
    total = by(effects, axis="examples", field="total")[0]
    assert total["n"] == 0 and total["effect"] is None and total["excluded_fallback"] == 60 * 4
    everything = by(effects, axis="examples", field="all")[0]
    assert everything["pairs"] == 60 * 4 * 3 and everything["excluded_fallback"] == 60 * 4
    style_total = by(effects, axis="style", field="total")[0]  # half of style's pairs have an ex0 side
    assert style_total["pairs"] == 60 * 2 and style_total["excluded_fallback"] == 60 * 2


def test_an_effect_that_only_one_model_has_is_an_interaction():
    def rate(variant, axes):
        return PLANTED[axes["examples"]] if variant == "big" else 0.55

    out = simulate(5, rate, variants=("small", "big"))
    effects = axis_effects(out, prompt_set(), FIELDS, n_boot=500)
    assert all(e["significant"] for e in by(effects, variant="big", axis="examples"))
    assert not any(e["significant"] for e in by(effects, variant="small"))
    inter = axis_interactions(out, prompt_set(), FIELDS, n_boot=500)
    assert {(i["a_variant"], i["b_variant"]) for i in inter} == {("small", "big")}
    ex = by(inter, axis="examples", field="all")[0]
    assert ex["significant"] and ex["low"] > 0
    assert ex["effect"] == pytest.approx(ex["effect_b"] - ex["effect_a"])
    assert not any(i["significant"] for i in inter if i["axis"] != "examples")


# ---------------------------------------------------------------- split and winner


def test_split_is_reproducible_disjoint_complete_and_stratified():
    docs = [f"doc{i:03d}" for i in range(60)]
    strata = {d: ("acme" if i < 40 else "globex") for i, d in enumerate(docs)}
    sel, conf = split_documents(docs, strata, 0.5, seed=7)
    assert (sel, conf) == split_documents(list(reversed(docs)), strata, 0.5, seed=7)  # order does not matter
    assert not set(sel) & set(conf) and set(sel) | set(conf) == set(docs)
    assert sum(strata[d] == "acme" for d in conf) == 20 and sum(strata[d] == "globex" for d in conf) == 10
    assert split_documents(docs, strata, 0.5, seed=8) != (sel, conf)
    # Without strata a seeded split still holds out the share asked for; with them, each stratum its share.
    sel2, conf2 = split_documents(docs, None, 0.25, seed=7)
    assert len(conf2) == 15 and len(sel2) == 45
    odd = {d: ("a" if i < 7 else "b" if i < 12 else None) for i, d in enumerate(docs[:15])}
    _, conf3 = split_documents(docs[:15], odd, 1 / 3, seed=1)
    counts = pd.Series([odd[d] or "?" for d in conf3]).value_counts()
    assert len(conf3) == 5 and counts.get("a", 0) in (2, 3) and counts.get("b", 0) in (1, 2) and counts.get("?", 0) == 1
    with pytest.raises(ValueError, match="confirm_fraction"):
        split_documents(docs, None, 1.0)


def test_winner_is_picked_on_selection_and_reported_on_other_documents():
    out = simulate(6, examples_only)
    prompts = list(prompt_set())
    sel, conf = split_documents(out["doc_id"].unique(), None, 0.5, seed=6)
    w = honest_winner(out, prompts, prompts[0], sel, conf, FIELDS, n_boot=500, seed=6)
    assert prompt_set()[w["winner"]]["examples"] == "ex1"
    assert w["baseline"] == "axes.terse-ex0-json" and w["candidates"] == 8
    assert w["n_selection"] == w["n_confirmation"] == 30
    assert w["diff_vs_baseline"] == pytest.approx(w["confirmation_accuracy"] - w["baseline_confirmation_accuracy"])
    assert w["low"] > 0 and w["p_adjusted"] < 0.05 and w["significant"]
    assert w["optimism"] == pytest.approx(w["selection_accuracy"] - w["confirmation_accuracy"])
    assert {t["field"] for t in w["tests"]} == {*FIELDS, "all"}
    assert all(t["p_adjusted"] >= t["p_value"] for t in w["tests"])  # Holm over the winner's five tests
    # The confirmation numbers are the winner's accuracy on the confirmation documents and no others.
    own = out[(out["prompt"] == w["winner"]) & out["doc_id"].isin(conf)]
    assert w["confirmation_accuracy"] == pytest.approx(own["own_correct"].mean())
    assert w["sentence"].startswith("choosing the best of 8 prompts on 30 documents ")


def test_choosing_the_best_of_equal_prompts_overstates_by_the_expected_maximum():
    """Eight prompts of equal accuracy p, values independent (no shared document difficulty), n values
    each on the selection documents. The best selection accuracy exceeds p by E[max of 8 standard
    normals] = 1.4236 standard errors sqrt(p(1-p)/n) on average (Harter 1961, "Expected values of
    normal order statistics", Biometrika 48:151-165, table for n = 8), and the winner's confirmation
    accuracy is unbiased, so the mean optimism is about 1.4236 * sqrt(0.24 / 120) = 6.4 points."""
    prompts = list(prompt_set())
    optimism = []
    for seed in range(20):
        out = simulate(200 + seed, equal, doc_sd=0.0)
        sel, conf = split_documents(out["doc_id"].unique(), None, 0.5, seed=seed)
        optimism.append(honest_winner(out, prompts, prompts[0], sel, conf, FIELDS, n_boot=100, seed=seed)["optimism"])
    expected = 1.4236 * math.sqrt(0.6 * 0.4 / (30 * 4))
    # Each run's optimism has a standard deviation near 1.17 standard errors (the maximum's 0.61 and the
    # confirmation's 1), so the mean of 20 is within 3 * 1.17 / sqrt(20) = 0.78 standard errors.
    assert np.mean(optimism) > 0
    assert abs(np.mean(optimism) - expected) < 0.78 * math.sqrt(0.24 / 120), (np.mean(optimism), expected)


def test_sentence_says_overstated_or_understated():
    assert optimism_sentence(8, 30, 0.0712) == (
        "choosing the best of 8 prompts on 30 documents overstated its accuracy by 7.1 points")
    assert "understated its accuracy by 2.0 points" in optimism_sentence(8, 30, -0.02)


def test_prompt_set_view_is_json_ready_and_consistent():
    import json

    out = simulate(9, examples_only)
    strata = {f"doc{i:03d}": i % 3 for i in range(60)}
    view = prompt_set_view(out, prompt_set(), FIELDS, baseline="axes.desc-ex0-lines", n_boot=300, seed=9,
                           strata=strata)
    json.dumps(view, allow_nan=False)
    assert view["axes"] == AXES and view["reference"] == {"style": "desc", "examples": "ex0", "format": "lines"}
    assert {e["level"] for e in view["effects"]} == {"terse", "ex1", "json"}
    assert view["interactions"] == [] and view["winner"]["baseline"] == "axes.desc-ex0-lines"
    split = view["split"]
    assert split["stratified"] and len(split["confirmation"]) == 30
    assert set(split["selection"]) | set(split["confirmation"]) == set(strata)


def tiny_outcomes(right: dict[tuple[str, str, str], int]) -> pd.DataFrame:
    rows = [{"doc_id": d, "variant": "m", "prompt": f"{a}-{b}", "error": None, "fallback_fields": [],
             "pred_total": "1" if r else "2", "truth_total": "1", "gt_total": "1", "match_total": bool(r)}
            for (d, a, b), r in right.items()]
    return outcomes(pd.DataFrame(rows), {"total": FieldSpec()})


# ---------------------------------------------------------------- the report section


@pytest.fixture(scope="module")
def two_model_view() -> dict:
    """A prompt-set view where examples matter for "big" only, as the report receives it."""
    def rate(variant, axes):
        return PLANTED[axes["examples"]] if variant == "big" else 0.55

    out = simulate(11, rate, variants=("small", "big"))
    return prompt_set_view(out, prompt_set(), FIELDS, n_boot=300, seed=11)


def report(tmp_path, view: dict | None, name: str) -> str:
    from invoicelab.report_html import write_html_report

    summary = {"name": "axes", "kind": "prompt", "fields": FIELDS, "documents": 60, "rows": [], "alpha": 0.05,
               "correction": "holm", "correction_name": "Holm"}
    if view is not None:
        summary["prompt_set"] = view
    folder = tmp_path / name
    folder.mkdir()
    return write_html_report(folder, summary, pd.DataFrame(), {"name": "axes"}).read_text(encoding="utf-8")


def test_report_shows_effects_forest_plot_and_the_winner_sentence(tmp_path, two_model_view):
    html = report(tmp_path, two_model_view, "with")
    assert '<a href="#prompt-set">' in html
    section = html[html.index('<section id="prompt-set">'):]
    section = section[:section.index("</section>")]
    assert section.count("<svg") == 1 and section.count("<table>") == 6  # matrix, effects, interactions, winners, 2 tests
    # The matrix: big's examples row has starred effects in every column, small's none.
    big = re.search(r"<td class=\"t\">big · examples: ex1 vs ex0</td>(.*?)</tr>", section, re.DOTALL).group(1)
    assert big.count("*") == 5
    small = re.search(r"<td class=\"t\">small · examples: ex1 vs ex0</td>(.*?)</tr>", section, re.DOTALL).group(1)
    assert "*" not in small
    for w in two_model_view["winners"]:
        assert w["sentence"][1:] in section  # the sentence, capitalised at the start of its line
    assert "overstated its accuracy by" in section or "understated its accuracy by" in section
    assert "interactions with the model" in section


def test_report_without_a_prompt_set_has_no_such_section(tmp_path):
    html = report(tmp_path, None, "without")
    assert 'id="prompt-set"' not in html and "#prompt-set" not in html


@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_prompt_set_report_renders_in_chromium(tmp_path, two_model_view):
    html = tmp_path / "with" / "report.html"
    report(tmp_path, two_model_view, "with")
    check = open_pages([(html, tmp_path / "prompt-set.png")], selector="#prompt-set figure.plot > svg")[0]
    assert not check.console_errors and not check.page_errors and not check.requests, check
    assert check.matches == 1
