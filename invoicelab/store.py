"""The result store: each run's rows as a Parquet dataset of atomic parts, addressed by content key.

A run folder holds ``results/``, one Parquet file per finished batch. A part is written under a
hidden temporary name and renamed into place, so it is complete or absent; readers (pandas,
polars, DuckDB, ``pyarrow.dataset``) skip the hidden files. Every row carries ``key`` (see
``invoicelab.identity``): a rerun, a resume after a killed driver, or another experiment that
asks for the same computation finds the key and does not compute it again. Part names derive from
the keys they hold, so a batch written twice (a retry after a lost acknowledgement) replaces its
own file instead of duplicating rows; ``dedupe`` removes what slips through anyway.

This module never imports Ray or a model.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from invoicelab.identity import digest

RESULTS = "results"
"""The folder of a run's result parts."""

RUN_FAULTS = ("worker", "timeout", "load", "pipeline")
"""Error stages that say what happened to that run (a dead worker, a timeout, a model that did not
load), not what the computation gives: such rows are never reused by another experiment."""


def results_dir(run_dir: Path) -> Path:
    return Path(run_dir) / RESULTS


def part_name(prefix: str, keys: Iterable[str]) -> str:
    """A part's file stem: the writer's prefix and a hash of the sorted keys it holds."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in prefix)[:60]
    return f"{safe}-{digest(sorted(keys))[:20]}"


def write_part(folder: Path, table: pa.Table, name: str) -> Path:
    """Write ``table`` as ``folder/name.parquet`` atomically (temporary hidden file, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}.parquet"
    tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def parts(folder: Path) -> list[Path]:
    """The complete parts of a results folder, in name order."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))) if folder.is_dir() else []


def read_columns(folder: Path, columns: list[str] | None = None) -> pa.Table | None:
    """The whole dataset (or some columns) of a results folder; None when it has no parts.

    Parts written by an older version may lack newer columns: the schemas are unified, so those read as null.
    """
    files = [str(f) for f in parts(folder)]
    if not files:
        return None
    unified = pa.unify_schemas([pq.read_schema(f) for f in files])
    columns = [c for c in columns if c in unified.names] if columns is not None else None
    return pads.dataset(files, schema=unified, format="parquet").to_table(columns=columns)


def keys_in(folder: Path) -> set[str]:
    """The content keys of every row in a results folder."""
    table = read_columns(folder, ["key"])
    return set(table.column("key").to_pylist()) if table is not None else set()


def reusable(store_root: Path, own: Path, wanted: set[str]) -> dict[Path, set[str]]:
    """Parts of other runs under ``store_root`` holding rows with wanted keys (first source wins).

    Rows that record a run's own faults (``RUN_FAULTS``) are not reused: they are computed again.

    Args:
        store_root: A folder of run folders (``<store_root>/<run>/results/*.parquet``).
        own: This run's results folder, skipped.
        wanted: Keys this run still needs.

    Returns:
        Part file -> the wanted keys it holds.
    """
    found: dict[Path, set[str]] = {}
    left = set(wanted)
    own = Path(own).resolve()
    for folder in sorted(Path(store_root).glob(f"*/{RESULTS}")) if Path(store_root).is_dir() else []:
        if not left:
            break
        if folder.resolve() == own:
            continue
        for part in parts(folder):
            try:
                table = pq.read_table(part, columns=["key", "error_stage"])
            except (pa.ArrowInvalid, KeyError, OSError):
                continue  # a part of another schema (an older version) or unreadable: not reusable
            stages = table.column("error_stage").to_pylist()
            keys = {k for k, stage in zip(table.column("key").to_pylist(), stages) if stage not in RUN_FAULTS}
            hit = keys & left
            if hit:
                found[part] = hit
                left -= hit
    return found


def adopt(sources: dict[Path, set[str]], folder: Path, names: dict[str, dict[str, str]],
          schema: pa.Schema) -> int:
    """Copy rows of other runs into this run, renamed to this run's variant and prompt names.

    Args:
        sources: Part -> keys to copy from it (from ``reusable``).
        folder: This run's results folder.
        names: Key -> the columns to overwrite (``variant``, ``prompt``, ``doc_id``, ``file``).
        schema: This run's result schema. Columns a part lacks (written by an older version) are added as
            nulls, so that every row the plan counted as reused arrives.

    Returns:
        Rows copied.
    """
    copied = 0
    for part, keys in sources.items():
        table = pq.read_table(part)
        table = table.filter(pc.is_in(table.column("key"), pa.array(sorted(keys))))
        if table.num_rows == 0:
            continue
        for name in schema.names:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
        table = table.select(schema.names).cast(schema)
        table_keys = table.column("key").to_pylist()
        for column in sorted({c for k in table_keys for c in names[k]}):
            values = [names[k].get(column) for k in table_keys]
            table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
        write_part(folder, table, part_name("reused", table_keys))
        copied += table.num_rows
    return copied


def retire(folder: Path, keep: set[str]) -> int:
    """Move rows whose key is not in ``keep`` (an earlier config's rows) to ``<run>/superseded/``.

    The results folder then holds only this experiment's rows, each once; nothing is deleted.

    Returns:
        Rows moved.
    """
    moved = 0
    for part in parts(folder):
        keys = pq.read_table(part, columns=["key"]).column("key").to_pylist()
        stale = [i for i, k in enumerate(keys) if k not in keep]
        if not stale:
            continue
        table = pq.read_table(part)
        write_part(Path(folder).parent / "superseded", table.take(pa.array(stale, pa.int64())), part.stem)
        fresh = [i for i, k in enumerate(keys) if k in keep]
        if fresh:
            write_part(part.parent, table.take(pa.array(fresh, pa.int64())), part.stem)
        else:
            part.unlink()
        moved += len(stale)
    return moved


def dedupe(folder: Path) -> tuple[int, set[str]]:
    """Keep each key once (the first part in name order wins); rewrite parts that repeat a key.

    Returns:
        Rows removed, and the keys the folder holds afterwards.
    """
    seen: set[str] = set()
    removed = 0
    for part in parts(folder):
        keys = pq.read_table(part, columns=["key"]).column("key").to_pylist()
        keep = []
        for i, k in enumerate(keys):
            if k not in seen:
                seen.add(k)
                keep.append(i)
        if len(keep) == len(keys):
            continue
        removed += len(keys) - len(keep)
        if keep:
            write_part(part.parent, pq.read_table(part).take(pa.array(keep, pa.int64())), part.stem)
        else:
            part.unlink()
    return removed, seen
