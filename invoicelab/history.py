"""The results store's history: every run recorded in an embedded DuckDB file next to the runs' Parquet.

``<store>/history.duckdb`` holds table ``runs`` (one row per finished run: name, kind, dataset, folder,
time, config digest, version, hardware), table ``metrics`` (one row per run x variant x prompt x field:
the accuracies of its summary.json, plus field ``all`` for the micro accuracy and F1) and table ``prompts``
(one row per run x prompt x text: version, hash, fields, rendered text; see ``invoicelab.prompt_versions``,
which also reads it back for ``invoicelab prompts log``). The result rows stay
in each run's Parquet parts, the source of truth; the file holds only summary numbers and where the rows
are, read in place by the table macro ``run_results(run_dir)``::

    SELECT variant, avg(match_total::INT) FROM run_results('/abs/runs/quickstart') GROUP BY variant

A run folder reused by a later run holds the later rows, so ``run_results`` of an earlier run shows them.
DuckDB lets one process at a time open a file for writing, so every call opens, works and closes at
once, and waits briefly when another process holds the lock.

This module never imports Ray or a model, and never copies result rows into the database; DuckDB and
pandas (and ``invoicelab.store``, whose pyarrow brings pandas) are imported inside functions, as the CLI
imports this module.
"""

from __future__ import annotations

import json
import math
import re
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoicelab.identity import digest, version

if TYPE_CHECKING:
    import pandas as pd

DB_NAME = "history.duckdb"
ALL = "all"
"""The pseudo-field of a row's totals: micro accuracy over every field, and F1."""

HISTORY_COLUMNS = ["finished_at", "run_id", "name", "kind", "dataset", "variant", "model", "precision",
                   "prompt", "field", "accuracy", "n"]
TREND_COLUMNS = ["finished_at", "run_id", "dataset", "variant", "model", "prompt", "field", "accuracy"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (run_id VARCHAR PRIMARY KEY, name VARCHAR, kind VARCHAR,
       dataset VARCHAR, run_dir VARCHAR, finished_at TIMESTAMP, documents INTEGER, config_digest VARCHAR,
       version VARCHAR, hardware JSON, recorded_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS metrics (run_id VARCHAR, variant VARCHAR, backend VARCHAR, model VARCHAR,
       precision VARCHAR, prompt VARCHAR, field VARCHAR, accuracy DOUBLE, exact DOUBLE, similarity DOUBLE,
       f1 DOUBLE, n INTEGER)""",
    """CREATE TABLE IF NOT EXISTS prompts (run_id VARCHAR, prompt VARCHAR, prompt_version INTEGER,
       prompt_hash VARCHAR, fields_digest VARCHAR, fields_json VARCHAR, rendered VARCHAR, n_rows BIGINT)""",
    # Parameters of a table function must be constants, so the macro takes the folder, not a run id.
    """CREATE OR REPLACE MACRO run_results(run_dir) AS TABLE
       SELECT * FROM read_parquet(run_dir || '/results/*.parquet', union_by_name = true)""",
]
_LOCK_WAITS = [0.05 * 2 ** i for i in range(5)] + [1.0] * 8  # ~10 s in all


def db_path(store: Path) -> Path:
    """The history database of a store folder."""
    return Path(store) / DB_NAME


@contextmanager
def _connect(store: Path, read_only: bool = False):
    """A short-lived connection; retries while another process holds the file's lock."""
    import duckdb

    path = db_path(store)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    # No retry library is installed: a tiny loop of growing waits is all a lock needs.
    for wait in [*_LOCK_WAITS, None]:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as err:
            if wait is None or "lock" not in str(err).lower():
                raise
            time.sleep(wait)
    try:
        if not read_only:
            for statement in _SCHEMA:
                con.execute(statement)
        yield con
    finally:
        con.close()


connect = _connect
"""``with connect(store, read_only=False) as con``: a short-lived connection to a store's history."""


def record_run(store: Path, run_dir: Path, summary: dict[str, Any], experiment: dict[str, Any],
               hardware: dict[str, Any] | None = None) -> str:
    """Record a finished run (its summary's accuracies and where its rows are) in the store's history.

    Recording the same run again (same folder and finish time) replaces its rows instead of adding more.

    Args:
        store: The store folder; the database is ``<store>/history.duckdb``.
        run_dir: The run's folder (``results/*.parquet``, summary.json).
        summary: The run's summary.json content. Its ``finished_at`` (ISO time) dates the run; without
            it, the summary.json file's modification time does, else the present.
        experiment: The validated experiment config as JSON-able data (experiment.json).
        hardware: Where it ran (CPU, GPUs, nodes), kept as JSON.

    Returns:
        The run id, ``<name>-<finished UTC>-<hash>``.
    """
    run_dir = Path(run_dir).resolve()
    finished = _finished_at(summary, run_dir)
    name = str(summary.get("name") or experiment.get("name") or run_dir.name)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    run_id = f"{safe}-{finished:%Y%m%dT%H%M%S}-{digest([str(run_dir), finished.isoformat()])[:6]}"
    run = [run_id, name, str(summary.get("kind") or experiment.get("kind") or ""), _dataset(experiment),
           str(run_dir), finished, summary.get("documents"), digest(experiment), version("invoicelab"),
           json.dumps(hardware, default=str) if hardware is not None else None,
           datetime.now(timezone.utc).replace(tzinfo=None)]
    metrics = _metric_rows(run_id, summary, experiment, _truth_counts(run_dir))
    from invoicelab.prompt_versions import prompt_rows

    prompts = prompt_rows(run_id, run_dir, experiment)
    with _connect(store) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM metrics WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM prompts WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run)
        if metrics:
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", metrics)
        if prompts:
            con.executemany("INSERT INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", prompts)
        con.execute("COMMIT")
    from invoicelab.history_perf import record_performance  # table performance: speed, memory, cost per variant

    record_performance(store, run_id, run_dir, summary, experiment, hardware)
    return run_id


def _finished_at(summary: dict[str, Any], run_dir: Path) -> datetime:
    """The run's finish time, UTC, whole seconds, without tzinfo (DuckDB TIMESTAMP)."""
    stamp = summary.get("finished_at")
    if isinstance(stamp, str) and stamp:
        when = datetime.fromisoformat(stamp)
    elif isinstance(stamp, (int, float)):
        when = datetime.fromtimestamp(stamp, timezone.utc)
    elif (run_dir / "summary.json").is_file():
        when = datetime.fromtimestamp((run_dir / "summary.json").stat().st_mtime, timezone.utc)
    else:
        when = datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # a naive stamp is taken as UTC, as this module writes them
    return when.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)


def _dataset(experiment: dict[str, Any]) -> str:
    """A short description of the documents: ``synthetic n=16,seed=7`` or ``folder data/sroie``."""
    ds = experiment.get("dataset") or {}
    if ds.get("source") == "synthetic":
        seed = ds.get("seed") if ds.get("seed") is not None else experiment.get("seed")
        text = f"synthetic n={ds.get('n')},seed={seed}"
    else:
        text = f"{ds.get('source') or 'folder'} {ds.get('path') or ''}".strip()
    return f"{text} limit={ds['limit']}" if ds.get("limit") else text


def _truth_counts(run_dir: Path) -> dict[tuple[str, str, str], int]:
    """(variant, prompt, field) -> result rows whose ground truth for the field is not empty."""
    import duckdb

    from invoicelab.store import parts, results_dir

    files = [str(p) for p in parts(results_dir(run_dir))]
    if not files:
        return {}
    con = duckdb.connect()  # in memory: the history file stays unlocked while the Parquet is read
    try:
        names = con.execute("SELECT * FROM read_parquet(?, union_by_name = true) LIMIT 0", [files]).df().columns
        fields = [c[3:] for c in names if c.startswith("gt_")]
        if not fields:
            return {}
        counts = ", ".join(f"count(nullif(trim(\"gt_{f}\"), '')) AS \"{f}\"" for f in fields)
        df = con.execute(f"SELECT variant, prompt, {counts} FROM read_parquet(?, union_by_name = true) "
                         "GROUP BY variant, prompt", [files]).df()
    finally:
        con.close()
    return {(r["variant"], r["prompt"], f): int(r[f]) for r in df.to_dict("records") for f in fields}


def _metric_rows(run_id: str, summary: dict[str, Any], experiment: dict[str, Any],
                 counts: dict[tuple[str, str, str], int]) -> list[list[Any]]:
    """One metrics row per (variant, prompt, field) of the summary, and one for field ``all``."""
    variants = {v.get("name"): v for v in experiment.get("variants") or []}
    fields = list(summary.get("fields") or experiment.get("fields") or [])
    rows = []
    for row in summary.get("rows") or []:
        variant, prompt = row.get("variant"), row.get("prompt")
        v = variants.get(variant, {})
        base = [run_id, variant, v.get("backend"), v.get("model"), v.get("precision") or row.get("precision_loaded"),
                prompt]
        for f in fields:
            if _number(row.get(f)) is not None:
                rows.append([*base, f, _number(row[f]), _per_field(row.get("exact"), f),
                             _per_field(row.get("similarity"), f), None, counts.get((variant, prompt, f))])
        # A row's "exact"/"similarity" is its total when a number, per field when a mapping.
        n_all = row.get("values") or sum(counts.get((variant, prompt, f), 0) for f in fields) or None
        rows.append([*base, ALL, _number(row.get("accuracy")), _number(row.get("exact")),
                     _number(row.get("similarity")), _number(row.get("f1")), n_all])
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _per_field(value: Any, field: str) -> float | None:
    return _number(value.get(field)) if isinstance(value, dict) else None


def _filters(**values: str | None) -> tuple[str, list[str]]:
    """A WHERE clause of case-insensitive substring matches (``%`` and ``_`` act as ILIKE wildcards)."""
    columns = {"model": "concat_ws(' ', m.variant, m.backend, m.model)", "prompt": "m.prompt", "field": "m.field",
               "dataset": "r.dataset", "name": "r.name"}
    clauses = [f"{columns[k]} ILIKE '%' || ? || '%'" for k, v in values.items() if v]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", [v for v in values.values() if v]


def _query(store: Path, sql: str, params: list[Any], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    if not db_path(store).is_file():
        return pd.DataFrame(columns=columns)
    with _connect(store, read_only=True) as con:
        df = con.execute(sql, params).df()
    df["finished_at"] = pd.to_datetime(df["finished_at"]).dt.tz_localize("UTC")
    return df


def history(store: Path, model: str | None = None, prompt: str | None = None, field: str | None = None,
            dataset: str | None = None, name: str | None = None) -> pd.DataFrame:
    """The timeline of recorded runs, newest first, one row per run x variant x prompt x field.

    Filters are case-insensitive substring matches; ``model`` matches the variant name, backend or model.

    Args:
        store: The store folder.
        model, prompt, field, dataset, name: Keep rows whose column contains this text.

    Returns:
        Columns ``HISTORY_COLUMNS`` (``finished_at`` in UTC; field ``all`` holds the micro accuracy);
        empty when nothing was recorded.
    """
    where, params = _filters(model=model, prompt=prompt, field=field, dataset=dataset, name=name)
    sql = (f"SELECT {', '.join(HISTORY_COLUMNS)} FROM metrics m JOIN runs r USING (run_id){where} "
           f"ORDER BY r.finished_at DESC, r.run_id, m.variant, m.prompt, m.field = '{ALL}', m.field")
    return _query(store, sql, params, HISTORY_COLUMNS)


def trend(store: Path, model: str | None = None, prompt: str | None = None, field: str | None = None,
          dataset: str | None = None) -> pd.DataFrame:
    """Accuracy of each (variant, prompt, field) over time, oldest first, for the report's trend plots.

    Args:
        store: The store folder.
        model, prompt, field, dataset: Substring filters, as in ``history``.

    Returns:
        Columns ``TREND_COLUMNS``.
    """
    where, params = _filters(model=model, prompt=prompt, field=field, dataset=dataset)
    sql = (f"SELECT {', '.join(TREND_COLUMNS)} FROM metrics m JOIN runs r USING (run_id){where} "
           "ORDER BY r.finished_at, m.variant, m.prompt, m.field")
    return _query(store, sql, params, TREND_COLUMNS)


def resolve_run(store: Path, ref: str) -> Path:
    """A run folder from a folder path, a recorded run id, or a unique prefix of one.

    Raises:
        FileNotFoundError: ``ref`` is neither a folder nor the id of a recorded run.
        ValueError: the prefix matches several runs (they are named).
    """
    if Path(ref).is_dir():
        return Path(ref)
    found = []
    if db_path(store).is_file():
        with _connect(store, read_only=True) as con:
            found = con.execute("SELECT run_id, run_dir FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id",
                                [ref]).fetchall()
    exact = [d for r, d in found if r == ref]
    if exact or len(found) == 1:
        return Path(exact[0] if exact else found[0][1])
    if found:
        raise ValueError(f"run {ref!r} is ambiguous: {', '.join(r for r, _ in found)}")
    raise FileNotFoundError(f"no run folder or recorded run id {ref!r} (history in {db_path(store)})")


def shared_documents(run_a: Path, run_b: Path, columns: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both runs' result rows for the documents they share (by ``doc_id``), read by DuckDB from their Parquet.

    Args:
        run_a, run_b: Run folders.
        columns: Columns to read (``doc_id``, ``variant`` and ``prompt`` are always read); default all.

    Returns:
        ``(rows_a, rows_b)``, each ordered by doc_id, variant, prompt.

    Raises:
        FileNotFoundError: a run folder has no result parts.
    """
    import duckdb

    from invoicelab.store import parts, results_dir

    files = []
    for run in (run_a, run_b):
        found = [str(p) for p in parts(results_dir(run))]
        if not found:
            raise FileNotFoundError(f"no result parts in {results_dir(run)}")
        files.append(found)
    keep = ["doc_id", "variant", "prompt"] + [c for c in columns or [] if c not in ("doc_id", "variant", "prompt")]
    select = ", ".join(f'"{c}"' for c in keep) if columns else "*"
    shared = ("SELECT doc_id FROM read_parquet($a, union_by_name = true) INTERSECT "
              "SELECT doc_id FROM read_parquet($b, union_by_name = true)")
    con = duckdb.connect()
    try:
        frames = tuple(con.execute(f"SELECT {select} FROM read_parquet(${side}, union_by_name = true) "
                                   f"WHERE doc_id IN ({shared}) ORDER BY doc_id, variant, prompt",
                                   {"a": files[0], "b": files[1]}).df() for side in ("a", "b"))
    finally:
        con.close()
    return frames


def format_history(df: pd.DataFrame) -> list[str]:
    """Lines of a compact timeline table for the terminal; a run's time, id and dataset show once."""
    if df.empty:
        return ["no runs recorded"]
    heads = ["finished (UTC)", "run", "dataset", "variant", "model", "prompt", "field", "accuracy", "n"]
    cells, last = [], None
    for r in df.to_dict("records"):
        first = r["run_id"] != last
        last = r["run_id"]
        when = f"{r['finished_at']:%Y-%m-%d %H:%M}" if first else ""
        acc = "-" if _missing(r["accuracy"]) else f"{r['accuracy']:.3f}"
        n = "" if _missing(r["n"]) else str(int(r["n"]))
        cells.append([when, r["run_id"] if first else "", r["dataset"] if first else "", r["variant"],
                      "" if _missing(r["model"]) else str(r["model"]), r["prompt"], r["field"], acc, n])
    widths = [max(len(str(c)) for c in col) for col in zip(heads, *cells)]
    right = {7, 8}  # numbers right-aligned

    def line(row: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return [line(heads), line(["-" * w for w in widths])] + [line(c) for c in cells]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
