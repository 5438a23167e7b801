"""The result writer: turns result tables into atomic Parquet parts of the run's dataset.

One instance per run, on the driver's node (so a run needs no shared file system: workers'
result tables reach it through Ray's object store, never through the driver process). It also
checks exactly-once at the end and summarises the run from its own files, so the driver only
ever holds counters. A plain class; ``invoicelab.actors.ray_actors`` runs it as an actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from invoicelab import store
from invoicelab.results import schema, to_table
from invoicelab.runs import summarize_folder


class ResultWriter:
    """Writes parts into ``<run_dir>/results/`` and answers questions about them.

    Args:
        run_dir: The run's output folder.
        fields: The experiment's field names (the result schema depends on them).
    """

    def __init__(self, run_dir: str, fields: list[str]):
        self.folder = store.results_dir(Path(run_dir))
        self.fields = list(fields)
        self.schema = schema(self.fields)

    def write(self, table: pa.Table, prefix: str) -> dict[str, int]:
        """Write one batch's rows as a part; returns ``{"rows": n, "errors": e}``."""
        table = table.select(self.schema.names).cast(self.schema)
        if table.num_rows:
            store.write_part(self.folder, table, store.part_name(prefix, table.column("key").to_pylist()))
        errors = table.num_rows - pc.sum(pc.is_null(table.column("error")).cast(pa.int64())).as_py() \
            if table.num_rows else 0
        return {"rows": table.num_rows, "errors": errors}

    def write_rows(self, rows: list[dict[str, Any]], prefix: str) -> dict[str, int]:
        """Write rows given as dicts (error rows the driver made for a failed batch)."""
        return self.write(to_table(rows, self.fields), prefix)

    def finalize(self, expected: list[str]) -> dict[str, Any]:
        """Drop repeated keys; return how many, and which expected keys have no row."""
        removed, present = store.dedupe(self.folder)
        return {"duplicates_dropped": removed, "missing": [k for k in expected if k not in present]}

    def summarize(self, timings: dict[str, dict[str, float]], experiment_json: str) -> dict[str, Any]:
        """The run's summary (``invoicelab.analysis.summarize``)."""
        return summarize_folder(self.folder, experiment_json, timings)
