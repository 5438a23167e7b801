"""Scoring on 100 KB of garbage: normalising and comparing it must stay fast for every field type.

A backtracking regex in a normaliser would turn a long model answer into minutes of CPU. Prints the
seconds of ``normalize`` plus ``score_field`` per field type (best of three) and, last, one JSON line
with the slowest type's time (target: under 2 s).
"""

from __future__ import annotations

import json
import time

from invoicelab.config import FieldSpec
from invoicelab.scoring import normalize, score_field

SPECS = {"amount": FieldSpec(type="amount"), "date": FieldSpec(type="date"),
         "date-dmy": FieldSpec(type="date", day_first=True), "currency": FieldSpec(type="currency"),
         "id": FieldSpec(type="id"), "text": FieldSpec(type="text")}
GARBAGE = ("1-1 jan 12,5 $ (RM) " * 5000) + "1" + " " * 20_000 + "x" * 5


def seconds(spec: FieldSpec, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        normalize(GARBAGE, spec)
        score_field(GARBAGE, GARBAGE, spec)
        best = min(best, time.perf_counter() - start)
    return best


PARSER_GARBAGE = ['"' * 100_000, '{"a": "' + "\\" * 100_000, '{"a": [1,' * 12_000, "{a:" + " " * 100_000 + "x"]


def parse_seconds(repeats: int = 3) -> float:
    """The output parser on the same kinds of 100 KB garbage as tests/test_parsing.py (slowest input)."""
    from invoicelab.parsing import parse_fields

    worst = 0.0
    for text in PARSER_GARBAGE:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            parse_fields(text, ["total", "invoice_date"])
            best = min(best, time.perf_counter() - start)
        worst = max(worst, best)
    return worst


def main() -> None:
    times = {name: seconds(spec) for name, spec in SPECS.items()}
    times["parse_fields"] = parse_seconds()
    print("   ".join(f"{name}: {s:.3f} s" for name, s in times.items()) + f"   ({len(GARBAGE)} characters)")
    slowest = max(times.values())
    print(json.dumps({"benchmark": "scoring_garbage", "metric": "slowest_type_s_per_100kb", "value": round(slowest, 3),
                      "target": "< 2.0", "met": bool(slowest < 2.0)}))


if __name__ == "__main__":
    main()
