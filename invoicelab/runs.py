"""Finished run folders read back: their experiment, a fresh summary, and paired comparisons of two runs.

A run folder holds ``experiment.json``, ``summary.json`` and ``results/`` (see ``store``). This module
reads them and hands frames to the pure analysis functions; it never writes and never imports Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from invoicelab.analysis import PromptSetInfo
from invoicelab.config import ConfigError, Experiment


def summarize_folder(folder: Path, experiment_json: str, timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Summarise a results folder (``analysis.summarize``), its variants in the experiment's order."""
    from invoicelab.analysis import summarize

    exp = Experiment.model_validate_json(experiment_json)
    return summarize(sorted_results(folder, exp), exp, timings, prompt_set_of(exp))


def prompt_set_of(exp: Experiment) -> PromptSetInfo | None:
    """A prompt-set experiment's generated prompts' axis levels, its baseline id and the documents' strata."""
    if exp.prompt_set is None:
        return None
    from invoicelab.prompt_sets import baseline_id, expand

    prompts = expand(exp.prompt_set, exp.prompts_path(), exp.seed)
    return PromptSetInfo({p.id: dict(p.axes) for p in prompts}, baseline_id(exp.prompt_set, prompts),
                         strata_of(exp, exp.prompt_set.stratify_by))


def strata_of(exp: Experiment, key: str | None) -> dict[str, str] | None:
    """doc_id -> the value of ``meta[key]`` in gt.jsonl; None when no key or no document has it."""
    if not key:
        return None
    from invoicelab.data.sources import load_documents

    labels = {d.doc_id: json.loads(d.meta_json).get(key) for d in load_documents(exp)}
    labels = {doc: str(v) for doc, v in labels.items() if v is not None}
    return labels or None


def sorted_results(folder: Path, exp: Experiment) -> pd.DataFrame:
    """A results folder as a pandas frame, variants in the experiment's order (the first is the reference)."""
    from invoicelab import store
    from invoicelab.results import schema

    table = store.read_columns(folder)
    df = (table if table is not None else schema(list(exp.fields)).empty_table()).to_pandas()
    rank = {v.name: i for i, v in enumerate(exp.variants)}
    return df.sort_values(["variant", "doc_id"], key=lambda col: col.map(rank) if col.name == "variant" else col,
                          kind="stable").reset_index(drop=True)


def experiment_of(run_dir: Path) -> Experiment:
    """The experiment a run folder was run with.

    Raises:
        ConfigError: the folder has no experiment.json (not a run folder).
    """
    path = Path(run_dir) / "experiment.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no experiment.json in it (not a run folder)")
    return Experiment.model_validate_json(path.read_text(encoding="utf-8"))


def summary_of(run_dir: Path) -> dict[str, Any]:
    """The run summarised again from its results with this version's analysis (timings and names kept).

    Raises:
        ConfigError: not a run folder, or it has no results.
    """
    from invoicelab.store import parts, results_dir

    exp = experiment_of(run_dir)
    if not parts(results_dir(run_dir)):
        raise ConfigError(f"{run_dir}: no results/ parts in it (the run computed nothing yet)")
    old_path = Path(run_dir) / "summary.json"
    old = json.loads(old_path.read_text(encoding="utf-8")) if old_path.is_file() else {}
    summary = summarize_folder(results_dir(run_dir), exp.model_dump_json(), old.get("timings", {}))
    keep = ("name", "run_s", "reused_rows", "superseded_rows", "computed_rows", "duplicates_dropped", "actors")
    return {**{k: old[k] for k in keep if k in old}, "name": old.get("name", exp.name), **summary}


def compare_runs(run_a: Path, run_b: Path, n_boot: int | None = None) -> dict[str, Any]:
    """B against A on the documents both runs have: every (variant, prompt) the two share, paired per field.

    When the runs share no (variant, prompt) name and each has one, those two are compared. Fields are
    those both runs extract, scored with run A's rules; p-values corrected with run A's method.

    Raises:
        ConfigError: not run folders, no shared documents or nothing comparable.
    """
    from invoicelab.history import shared_documents
    from invoicelab.metrics import outcomes
    from invoicelab.views import correct, paired_tests

    exp_a, exp_b = experiment_of(run_a), experiment_of(run_b)
    fields = {f: spec for f, spec in exp_a.fields.items() if f in exp_b.fields}
    if not fields:
        raise ConfigError(f"{run_a} and {run_b} extract no field in common")
    rows_a, rows_b = shared_documents(Path(run_a), Path(run_b))
    if rows_a.empty or rows_b.empty:
        raise ConfigError(f"{run_a} and {run_b} share no document")
    out = pd.concat([_labelled(outcomes(rows_a, fields), "A"), _labelled(outcomes(rows_b, fields), "B")])
    pairs = _pairs(rows_a, rows_b)
    if not pairs:
        raise ConfigError("the runs share no (variant, prompt), and one of them has several: nothing to pair")
    a = exp_a.analysis
    tests = correct(paired_tests(out, pairs, "runs", list(fields), n_boot or a.n_boot, exp_a.seed),
                    a.correction, a.alpha)
    return {"a": str(run_a), "b": str(run_b), "documents": int(rows_a["doc_id"].nunique()),
            "fields": list(fields), "correction": a.correction, "alpha": a.alpha, "tests": tests}


def _labelled(out: pd.DataFrame, run: str) -> pd.DataFrame:
    return out.assign(variant=run + ":" + out["variant"].astype(str))


def _pairs(rows_a: pd.DataFrame, rows_b: pd.DataFrame) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    arms_a = list(dict.fromkeys(zip(rows_a["variant"], rows_a["prompt"])))
    arms_b = list(dict.fromkeys(zip(rows_b["variant"], rows_b["prompt"])))
    shared = [arm for arm in arms_a if arm in arms_b]
    if not shared and len(arms_a) == len(arms_b) == 1:
        return [(("A:" + arms_a[0][0], arms_a[0][1]), ("B:" + arms_b[0][0], arms_b[0][1]))]
    return [(("A:" + v, p), ("B:" + v, p)) for v, p in shared]
