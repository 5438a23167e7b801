"""Running an experiment: pages once per text setting, then one actor pool per variant.

The driver lists documents (never their pixels), streams them through Ray Data, and streams the
result rows into one Parquet file. After each stage it checks that every expected
(document, variant, prompt) row arrived exactly once; a row that did not (a variant that could
not start, a lost batch) is written as an error row with the reason, so nothing is silently lost.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import ray

from invoicelab.actors.extractor import row_base
from invoicelab.actors.pages import TextSetting
from invoicelab.actors.ray_actors import ExtractorActor, PageActor
from invoicelab.analysis import summarize
from invoicelab.backends import backend_class
from invoicelab.config import Experiment, VariantSpec
from invoicelab.data.documents import Document
from invoicelab.data.sources import cache_root, load_documents
from invoicelab.orchestrator.cluster import connect
from invoicelab.orchestrator.resources import actor_pool_args
from invoicelab.prompts import load_prompt
from invoicelab.results import NO_PROMPT, ResultSink, error_row, to_table


class Progress(Protocol):
    """What the pipeline tells its caller as it goes (the CLI draws bars from it)."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass
class RunResult:
    """Where a finished run put its results, and its summary."""

    out_dir: Path
    results: Path
    summary: dict[str, Any]


def run_experiment(exp: Experiment, progress: Progress | None = None) -> RunResult:
    """Run every variant of ``exp`` over its dataset and write results.parquet.

    Raises:
        DatasetError: the dataset cannot be used at all.
        ConfigError: a prompt does not exist.
    """
    progress = progress or _Silent()
    prompts = [load_prompt(p, exp.prompts_dir) for p in exp.prompts]  # fail before starting anything
    docs = load_documents(exp)
    out = exp.out_path
    out.mkdir(parents=True, exist_ok=True)
    connect(exp.ray)
    sink = ResultSink(out / "results.parquet", list(exp.fields))
    pages: dict[TextSetting, tuple[ray.data.Dataset, list[dict[str, Any]]]] = {}
    timings: dict[str, dict[str, float]] = {}
    page_timings: dict[str, float] = {}
    for variant in exp.variants:
        setting = text_setting(exp, variant)
        if setting not in pages:
            start = time.perf_counter()
            pages[setting] = read_pages(exp, docs, setting, progress)
            page_timings[setting.engine] = time.perf_counter() - start
        variant_prompts = prompts if backend_class(variant.backend).uses_prompt else [None]
        timings[variant.name] = run_variant(exp, variant, variant_prompts, *pages[setting], sink, progress)
    sink.close()
    df = pd.read_parquet(sink.path)
    summary = summarize(df, list(exp.fields), timings, exp.kind.value, exp.seed)
    summary.update(name=exp.name, page_stage_s=page_timings, duplicates_dropped=sink.duplicates)
    return RunResult(out, sink.path, summary)


def text_setting(exp: Experiment, variant: VariantSpec) -> TextSetting:
    d = exp.dataset
    return TextSetting(variant.text_engine, d.pdf_dpi, d.max_pages, d.max_pixels)


def read_pages(exp: Experiment, docs: list[Document], setting: TextSetting,
               progress: Progress) -> tuple[ray.data.Dataset, list[dict[str, Any]]]:
    """Run the page stage; returns the page dataset (Arrow blocks of text, no pixels) and its rows."""
    progress.stage(f"pages ({setting.engine})", len(docs))
    ds = ray.data.from_items([d.row() for d in docs], override_num_blocks=max(1, min(len(docs), 64)))
    ds = ds.map_batches(PageActor, fn_constructor_kwargs={"setting": asdict(setting), "cache_dir": str(cache_root())},
                        **actor_pool_args(exp.page_stage, batch_size=4))
    tables = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        tables.append(batch)
        progress.advance(batch.num_rows)
    table = pa.concat_tables(tables)
    return ray.data.from_arrow(table), table.select(["doc_id", "path", "fields_json", "normalized_json"]).to_pylist()


def run_variant(exp: Experiment, variant: VariantSpec, prompts: list, ds: ray.data.Dataset,
                docs: list[dict[str, Any]], sink: ResultSink, progress: Progress) -> dict[str, float]:
    """Stream ``ds`` through the variant's actor pool into ``sink``; fill in rows that never came."""
    expected = [(d, p) for d in docs for p in prompts]
    progress.stage(f"{variant.name}", len(expected))
    before = len(sink.seen)
    start, failure = time.perf_counter(), ""
    stage = ds.map_batches(ExtractorActor, fn_constructor_kwargs={"experiment_json": exp.model_dump_json(),
                                                                  "variant_name": variant.name},
                           **actor_pool_args(variant.resources, variant.batch_size))
    try:
        for batch in stage.iter_batches(batch_format="pyarrow", batch_size=None):
            progress.advance(sink.add(batch))
    except Exception as err:  # noqa: BLE001 - a variant that fails must not take the others down
        failure = f"variant failed: {type(err).__name__}: {_first_line(err)}"
    wall = time.perf_counter() - start
    missing = [(d, p) for d, p in expected if (d["doc_id"], variant.name, p.id if p else NO_PROMPT) not in sink.seen]
    if missing:
        reason = failure or "no result returned by the pipeline"
        rows = [error_row(row_base(d, variant, p, exp.fields), reason, "pipeline") for d, p in missing]
        progress.advance(sink.add(to_table(rows, list(exp.fields))))
    return {"wall_s": wall, "rows": len(sink.seen) - before, "filled": len(missing),
            "wall_docs_per_s": len(expected) / wall if wall > 0 else float("nan")}


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1][:500] if text else ""
