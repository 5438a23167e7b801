"""Synthetic invoice generation speed: twenty clean invoices rendered and written as JPEG with their gt.jsonl.

Every experiment on synthetic data starts with this step. Prints the seconds for 20 invoices (best of
two, into a temporary folder) and, last, one JSON line with that figure (target: under 5 s).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from invoicelab.data.synthetic import generate

N_DOCS = 20


def seconds(repeats: int = 2) -> float:
    best = float("inf")
    for k in range(repeats):
        with tempfile.TemporaryDirectory(prefix="invoicelab-bench-") as folder:
            start = time.perf_counter()
            generate(Path(folder) / str(k), N_DOCS, seed=0)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    wall = seconds()
    print(f"{N_DOCS} invoices: {wall:.2f} s ({N_DOCS / wall:.1f} invoices/s, 100 dpi, clean pages)")
    print(json.dumps({"benchmark": "synthetic_generation", "metric": f"s_for_{N_DOCS}_invoices",
                      "value": round(wall, 3), "target": "< 5.0", "met": bool(wall < 5.0)}))


if __name__ == "__main__":
    main()
