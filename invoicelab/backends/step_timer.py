"""Timing a generation step by step: the prefill and the cost of one decoding step, for the batch tuner.

A ``StepTimer`` is a logits processor that changes nothing: ``generate`` calls it once per step, after
the step's forward pass, so the time from the start to its first call is the prefill (the prompt's
forward pass) and the time between calls is one decoding step. With both measured at a micro-batch
size, the time of a full answer of ``T`` tokens is projected as ``prefill + (T - 1) x step`` without
generating it: probing costs a few steps per size instead of whole answers. Never imports Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class StepTimes:
    """A timed generation: the prefill, the median decoding step, and how many steps were seen.

    Attributes:
        prefill_s: Seconds from the start of ``generate`` to the first step's logits.
        step_s: Median seconds of one further step (0 when only one step ran).
        steps: Steps seen.
    """

    prefill_s: float
    step_s: float
    steps: int

    def projected_s(self, tokens: int) -> float:
        """Seconds to generate ``tokens`` tokens for the whole batch (the longest answer sets it)."""
        return self.prefill_s + max(0, tokens - 1) * self.step_s


class StepTimer:
    """A no-op logits processor that notes when each step's logits are ready."""

    def __init__(self) -> None:
        self.begun = 0.0
        self.marks: list[float] = []

    def start(self) -> None:
        """Called just before ``generate`` (tokenization done)."""
        self.begun, self.marks = time.perf_counter(), []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.marks.append(time.perf_counter())
        return scores

    def result(self) -> StepTimes:
        """The prefill and the median step of the last ``generate``.

        Raises:
            RuntimeError: no step was seen (the timer was not passed to ``generate``).
        """
        if not self.marks:
            raise RuntimeError("the step timer saw no step")
        gaps = sorted(b - a for a, b in zip(self.marks, self.marks[1:]))
        step = gaps[len(gaps) // 2] if gaps else 0.0
        return StepTimes(self.marks[0] - self.begun, step, len(self.marks))
