"""Loading a run's results into a notebook: one data frame, pandas or polars, with documented columns.

``invoicelab.load`` is this module's ``load``. It reads the run's Parquet parts as they are (the same
rows the report is computed from), so what a notebook shows and what the report says agree. This
module never imports Ray or a model, never writes to the run folder, and imports polars only when
asked for a polars frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENGINES = ("pandas", "polars")


def load(run_dir: str | Path, engine: str = "pandas", with_outcomes: bool = False) -> Any:
    """A run's result rows as a data frame: one row per document x variant x prompt.

    Columns (types as in ``invoicelab.results``; null where a value does not apply):

    ====================  ==========================================================================
    key                   content key of the computation (document bytes, OCR, prompt, model, fields)
    doc_id                the document's id in gt.jsonl
    doc_sha256            sha256 of the document's bytes
    file                  the document's path or URI
    variant               the variant's name in the experiment
    backend               fake, rules, ocr-llm, transformers-vlm, vllm or openai-http
    model                 the model source as configured (null for fake and rules)
    precision             the configured weights precision (fp32, bf16, int8-dynamic, ...)
    prompt                the prompt id ("none" for backends that take no prompt)
    prompt_version        the prompt template's version
    prompt_hash           hash of the rendered template and the fields it renders for (``prompt_versions``)
    batch_size            documents handed to the actor at a time (tuned where the config says auto)
    raw_output            the model's answer text, before parsing
    parse_error           why the answer could not be read as the fields (null when it could)
    fallback_fields       fields whose value came from the rules fallback (list of names)
    latency_s             seconds of the model call, divided by the documents in it
    ocr_s                 seconds the page stage spent on OCR for the document
    ocr_cached            whether the OCR text came from the cache
    tokens_in             prompt tokens
    tokens_out            generated tokens
    cost                  money for the row's tokens (served backends with a price)
    load_s                seconds the worker took to load its model
    batch_docs            documents in the model call that produced the row
    micro_batch           the micro-batch size in force for that call (after any out-of-memory halving)
    oom_splits            out-of-memory failures the document went through before this row
    batch_latency_s       wall time of that call
    batch_tokens_per_s    generated tokens of that call per second
    peak_rss_bytes        the worker process's peak resident memory after the call
    gpu_peak_bytes        torch's peak GPU allocation during the call (GPU variants)
    gpu_used_bytes        GPU memory in use after the call, all processes (NVML)
    error                 why the row has no prediction (null when it has one)
    error_stage           where it failed: input, ocr, model, load, worker, timeout, pipeline
    backend_info          what the backend loaded, as JSON text (device, dtypes, versions)
    node_id               the Ray node that computed the row
    gpu_ids               the GPUs of the worker (list)
    worker                the actor that computed the row
    ====================  ==========================================================================

    And for each extracted field ``f``:

    ====================  ==========================================================================
    pred_f                the predicted value (model or fallback), text
    gt_f                  the ground truth compared with: its normalized form where the dataset has one
    truth_f               the verbatim ground truth from gt.jsonl
    score_f               the configured rule's score (1.0/0.0, or a similarity for fuzzy fields)
    match_f               whether the configured rule counts the prediction right
    in_text_f             whether the truth occurs in the text the model saw (null without text)
    ====================  ==========================================================================

    Args:
        run_dir: The run's folder (the one holding ``results/``).
        engine: ``"pandas"`` or ``"polars"``.
        with_outcomes: Return the per-value outcomes instead (``invoicelab.metrics.outcomes``: one row per
            variant x prompt x document x field with has_truth, predicted, correct, exact, strict,
            similarity, status, ...), scored with the run's field rules from experiment.json.

    Returns:
        A ``pandas.DataFrame`` or ``polars.DataFrame``.

    Raises:
        FileNotFoundError: the folder has no ``results/`` or no result parts in it.
        ValueError: an unknown engine.
        ImportError: polars is asked for and not installed.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    from invoicelab.store import read_columns, results_dir  # pyarrow (and pandas) only when loading

    run_dir = Path(run_dir)
    folder = results_dir(run_dir)
    table = read_columns(folder)
    if table is None:
        what = "no result parts in" if folder.is_dir() else "no results folder"
        raise FileNotFoundError(f"{what} {folder}: is {run_dir} a run folder of `invoicelab run`?")
    if with_outcomes:
        frame = _outcomes(run_dir, table.to_pandas())
        return _polars().from_pandas(frame) if engine == "polars" else frame
    return _polars().from_arrow(table) if engine == "polars" else table.to_pandas()


def _outcomes(run_dir: Path, rows: Any) -> Any:
    """The per-value outcomes of the rows, by the field rules the run was configured with."""
    from invoicelab.config import FieldSpec
    from invoicelab.metrics import outcomes

    experiment = json.loads((run_dir / "experiment.json").read_text(encoding="utf-8"))
    specs = {name: FieldSpec.model_validate(spec) for name, spec in experiment["fields"].items()}
    return outcomes(rows, specs)


def _polars() -> Any:
    try:
        import polars
    except ImportError as err:
        raise ImportError("engine='polars' needs polars: pip install polars (or 'invoicelab[polars]')") from err
    return polars
