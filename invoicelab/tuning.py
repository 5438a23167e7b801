"""Automatic batch size: probe growing micro-batches, stop at the throughput plateau or before the memory limit.

``search`` is the tuner's decision, apart from how a size is measured: it asks a ``measure(size)``
function for docs/s and peak memory at 1, 2, 4, ... documents per model call and stops when
- a size ran out of memory (the best size below it is taken; the run itself would halve the same way),
- a size's peak memory passed ``(1 - margin) x limit`` (it is not taken),
- ``patience`` doublings in a row each gained less than ``plateau`` of the best docs/s so far (one
  small gain is not a plateau: at batch 1 -> 2 a CPU gains little before it gains a lot),
- or the largest size allowed was measured.
It takes the size with the best docs/s among those it may take. Pure logic: no Ray, no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Probe:
    """One probed micro-batch size.

    Attributes:
        size: Documents per model call.
        docs_per_s: Documents per second at this size (projected to full answers where the probe was short).
        peak_bytes: Peak memory during the probe (process resident memory on CPU, torch's peak on a GPU).
        seconds: Wall time the probe itself took.
        out_of_memory: The probe ran out of memory (then docs_per_s is 0).
        note: How it was measured, or the out-of-memory message.
    """

    size: int
    docs_per_s: float
    peak_bytes: int | None
    seconds: float
    out_of_memory: bool = False
    note: str = ""


@dataclass
class Decision:
    """What the search chose and why, with every probe."""

    micro_batch: int
    docs_per_s: float
    peak_bytes: int | None
    reason: str
    probes: list[Probe] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "probes": [asdict(p) for p in self.probes]}


def sizes_up_to(largest: int) -> list[int]:
    """1, 2, 4, ... up to ``largest`` (``largest`` itself included when it is not a power of two)."""
    out, size = [], 1
    while size < largest:
        out.append(size)
        size *= 2
    return out + [largest]


def search(measure: Callable[[int], Probe], largest: int, plateau: float = 0.05, limit_bytes: int | None = None,
           margin: float = 0.15, patience: int = 2) -> Decision:
    """Probe growing sizes and choose one.

    Args:
        measure: Measures one size (must not raise for out-of-memory: it returns a probe marked so).
        largest: The largest size to probe.
        plateau: A doubling that gains less than this fraction of the best docs/s so far is "flat".
        limit_bytes: The memory the variant may use (None: no limit known).
        margin: Fraction of ``limit_bytes`` to keep free.
        patience: Flat doublings in a row that make a plateau.

    Returns:
        The decision; ``micro_batch`` is at least 1 even when every size ran out of memory (then the
        run itself turns such documents into error rows).
    """
    probes: list[Probe] = []
    best: Probe | None = None
    flat, reason = 0, f"measured every size up to {largest}"
    ceiling = limit_bytes * (1 - margin) if limit_bytes else None
    for size in sizes_up_to(largest):
        probe = measure(size)
        probes.append(probe)
        if probe.out_of_memory:
            reason = f"out of memory at {size}"
            break
        if ceiling is not None and probe.peak_bytes is not None and probe.peak_bytes > ceiling:
            reason = (f"peak memory at {size} ({probe.peak_bytes / 2**30:.2f} GiB) is past the limit less its "
                      f"margin ({ceiling / 2**30:.2f} GiB)")
            break
        gained = best is None or probe.docs_per_s > best.docs_per_s * (1 + plateau)
        if best is None or probe.docs_per_s > best.docs_per_s:
            best = probe
        flat = 0 if gained else flat + 1
        if flat >= patience:
            reason = f"throughput plateau: {patience} doublings each gained less than {plateau:.0%}"
            break
    if best is None:
        return Decision(1, 0.0, None, reason + "; no size fitted, so 1", probes)
    return Decision(best.size, best.docs_per_s, best.peak_bytes, reason, probes)


def probes_need(largest: int, sample_docs: int, rounds: int) -> int:
    """Documents the probes answer when every size up to ``largest`` is probed."""
    return rounds * sum(-(-sample_docs // size) * size for size in sizes_up_to(largest))


def ray_batch(micro_batch: int, docs: int | None = None) -> int:
    """The Ray batch (documents handed to an actor at a time) for a tuned micro-batch: two calls' worth, so
    that grouping by length has documents to choose from, and never more than the documents to run."""
    size = 2 * micro_batch
    return max(1, min(size, docs)) if docs else size
