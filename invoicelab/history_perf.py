"""Speed, memory and cost of each recorded run's variants: table ``performance`` of the store's history.

``<store>/history.duckdb`` (see ``invoicelab.history``) gains one row per run x variant x prompt: model
docs/s of one actor, the pool's wall docs/s, peak memory of one actor, cost per 1,000 documents, the batch
and micro-batch sizes really used, the pool's actors and per-actor resources, and the hardware it ran on.
``record_performance`` writes them when a run is recorded; ``performance`` reads them back, and for runs
recorded before the table existed (or whose rows are missing) it computes them from the run folder's
Parquet rows, summary.json and experiment.json, so old stores stay usable.

This module never imports Ray or a model and never copies result rows into the database; DuckDB and
pandas are imported inside functions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from invoicelab.history import _connect, db_path

COLUMNS = ["run_id", "variant", "prompt", "backend", "model", "precision", "docs", "errors", "docs_per_s",
           "wall_docs_per_s", "latency_s", "cost_mean", "peak_memory_bytes", "gpu_memory", "cost_per_1000",
           "batch_size", "micro_batch", "actors", "num_cpus", "num_gpus", "memory_gb", "hardware"]
_TYPES = ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "INTEGER", "INTEGER", "DOUBLE",
          "DOUBLE", "DOUBLE", "DOUBLE", "DOUBLE", "BOOLEAN", "DOUBLE", "INTEGER", "INTEGER", "INTEGER", "DOUBLE",
          "DOUBLE", "DOUBLE", "JSON"]
SCHEMA = f"CREATE TABLE IF NOT EXISTS performance ({', '.join(f'{c} {t}' for c, t in zip(COLUMNS, _TYPES))})"


def performance_rows(run_id: str, run_dir: Path, summary: dict[str, Any], experiment: dict[str, Any],
                     hardware: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per (variant, prompt) of a run folder: its measured speed, memory, cost and batch sizes.

    Args:
        run_id: The history's id of the run.
        run_dir: The run folder (``results/*.parquet``).
        summary: Its summary.json content (wall timings, cost per 1,000 documents).
        experiment: Its experiment.json content (variants' resources, prices).
        hardware: Where it ran.

    Returns:
        Dicts with keys ``COLUMNS`` (``hardware`` as JSON text); empty when the folder has no result rows.
    """
    variants = {v.get("name"): v for v in experiment.get("variants") or []}
    costs = {(r.get("variant"), r.get("prompt")): r.get("cost_per_1000") for r in summary.get("rows") or []}
    timings = summary.get("timings") or {}
    prices = (experiment.get("analysis") or {}).get("prices") or {}
    rows = []
    for m in _measured(Path(run_dir)):
        spec = variants.get(m["variant"], {})
        res = spec.get("resources") or {}
        cpus, gpus = float(res.get("num_cpus", 1.0)), float(res.get("num_gpus", 0.0))
        cost = costs.get((m["variant"], m["prompt"]))
        if cost is None:
            from invoicelab.views import cost_per_1000

            cost = cost_per_1000(m["latency_s"], m["cost_mean"], cpus, gpus, float(prices.get("cpu_hour", 0.0)),
                                 float(prices.get("gpu_hour", 0.0)))
        gpu_peak, rss_peak = _num(m.pop("gpu_peak")), _num(m.pop("rss_peak"))
        rows.append({
            "run_id": run_id, **m, "backend": spec.get("backend"), "model": spec.get("model"),
            "precision": spec.get("precision"),
            "wall_docs_per_s": _num((timings.get(m["variant"]) or {}).get("wall_docs_per_s")),
            "peak_memory_bytes": gpu_peak if gpu_peak else rss_peak, "gpu_memory": bool(gpu_peak),
            "cost_per_1000": _num(cost), "actors": int(res.get("actors", 1)), "num_cpus": cpus, "num_gpus": gpus,
            "memory_gb": _num(res.get("memory_gb")), "hardware": json.dumps(hardware, default=str) if hardware else None,
        })
    return rows


def _measured(run_dir: Path) -> list[dict[str, Any]]:
    """Per (variant, prompt) of the run's Parquet rows: counts, model time, batch sizes, memory peaks, cost."""
    import duckdb

    from invoicelab.store import parts, results_dir

    files = [str(p) for p in parts(results_dir(run_dir))]
    if not files:
        return []
    con = duckdb.connect()
    try:
        names = set(con.execute("SELECT * FROM read_parquet(?, union_by_name = true) LIMIT 0", [files]).df().columns)

        def col(expr: str, name: str) -> str:
            return expr if name in names else "NULL"

        ok = "error IS NULL"
        df = con.execute(
            "SELECT variant, prompt, count(*) AS docs, count(error) AS errors, "
            f"sum(latency_s) FILTER ({ok}) AS model_s, count(*) FILTER ({ok}) AS ok, "
            f"{col('max(batch_size)', 'batch_size')} AS batch_size, "
            f"{col(f'median(micro_batch) FILTER ({ok})', 'micro_batch')} AS micro_batch, "
            f"{col(f'max(batch_docs) FILTER ({ok})', 'batch_docs')} AS batch_docs, "
            f"{col('max(peak_rss_bytes)', 'peak_rss_bytes')} AS rss_peak, "
            f"{col('max(gpu_peak_bytes)', 'gpu_peak_bytes')} AS gpu_peak, "
            f"{col(f'avg(cost) FILTER ({ok})', 'cost')} AS cost_mean "
            "FROM read_parquet(?, union_by_name = true) GROUP BY variant, prompt ORDER BY variant, prompt",
            [files]).df()
    finally:
        con.close()
    out = []
    for r in df.to_dict("records"):
        model_s, ok_docs = _num(r["model_s"]), int(r["ok"])
        micro = _num(r["micro_batch"]) or _num(r["batch_docs"])  # rows before micro_batch: the call's documents
        out.append({"variant": r["variant"], "prompt": r["prompt"], "docs": int(r["docs"]), "errors": int(r["errors"]),
                    "docs_per_s": ok_docs / model_s if model_s else None,
                    "latency_s": model_s / ok_docs if model_s and ok_docs else None,
                    "cost_mean": _num(r["cost_mean"]), "batch_size": _int(r["batch_size"]),
                    "micro_batch": _int(micro), "rss_peak": _num(r["rss_peak"]), "gpu_peak": _num(r["gpu_peak"])})
    return out


def record_performance(store: Path, run_id: str, run_dir: Path, summary: dict[str, Any], experiment: dict[str, Any],
                       hardware: dict[str, Any] | None = None) -> int:
    """Write (or replace) a recorded run's performance rows in ``<store>/history.duckdb``.

    Args:
        store: The store folder.
        run_id: The id ``history.record_run`` gave the run.
        run_dir, summary, experiment, hardware: As for ``history.record_run``.

    Returns:
        The number of rows written.
    """
    rows = performance_rows(run_id, run_dir, summary, experiment, hardware)
    with _connect(store) as con:
        con.execute(SCHEMA)
        con.execute("BEGIN")
        con.execute("DELETE FROM performance WHERE run_id = ?", [run_id])
        if rows:
            marks = ", ".join("?" for _ in COLUMNS)
            con.executemany(f"INSERT INTO performance VALUES ({marks})", [[r[c] for c in COLUMNS] for r in rows])
        con.execute("COMMIT")
    return len(rows)


def performance(store: Path) -> list[dict[str, Any]]:
    """Every recorded run's performance rows, with the run's name, dataset, finish time and hardware.

    Runs without rows in table ``performance`` (recorded before it existed) are read from their run
    folders instead, when the folder still exists; rows of neither kind are left out.

    Returns:
        Dicts with keys ``COLUMNS`` plus ``name``, ``dataset``, ``run_dir``, ``finished_at`` and ``from_folder``
        (True when computed from the folder); ``hardware`` decoded to a dict (the run's own when the row has none).
    """
    if not db_path(store).is_file():
        return []
    with _connect(store, read_only=True) as con:
        runs = con.execute("SELECT run_id, name, dataset, run_dir, finished_at, hardware FROM runs").df()
        has_table = bool(con.execute("SELECT count(*) FROM information_schema.tables "
                                     "WHERE table_name = 'performance'").fetchone()[0])
        stored = con.execute(f"SELECT {', '.join(COLUMNS)} FROM performance").df() if has_table else None
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in (stored.to_dict("records") if stored is not None else []):
        by_run.setdefault(r["run_id"], []).append({**r, "from_folder": False})
    out = []
    for run in runs.to_dict("records"):
        rows = by_run.get(run["run_id"]) or _from_folder(run)
        hw = _json(run["hardware"])
        for r in rows:
            out.append({**{k: _clean(v) for k, v in r.items()}, "name": run["name"], "dataset": run["dataset"],
                        "run_dir": run["run_dir"], "finished_at": str(run["finished_at"]),
                        "hardware": _json(r.get("hardware")) or hw})
    return out


def _from_folder(run: dict[str, Any]) -> list[dict[str, Any]]:
    folder = Path(run["run_dir"] or "")
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        experiment = json.loads((folder / "experiment.json").read_text(encoding="utf-8"))
        rows = performance_rows(run["run_id"], folder, summary, experiment, None)
    except (OSError, ValueError):  # a moved or half-written folder: no evidence from it
        return []
    return [{**r, "from_folder": True} for r in rows]


def _json(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except ValueError:
            return None
    return None


def _clean(value: Any) -> Any:
    """pandas/numpy scalars to plain Python; NaN and NA to None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas comes with the store's pyarrow
        pass
    return value


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _int(value: Any) -> int | None:
    x = _num(value)
    return round(x) if x is not None else None
