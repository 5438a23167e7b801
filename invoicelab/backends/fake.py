"""The fake backend: echoes the ground truth as a model would, and injects faults on request.

For tests and dry runs of the orchestration: no model, no OCR, instant. Its answers go through
the real output parser. Faults are deterministic per (seed, variant, prompt, document), so a
test can predict them. It reads the ground truth through its own channel (``see_truth``), never
from its document inputs. Options (``variant.options``, typed in ``variants.FakeOptions``):

- ``error_rate``: fraction of documents for which the backend reports an error.
- ``garbage_rate``: fraction answered with text that holds no JSON.
- ``wrong_rate``: fraction with every value altered; a number, or a mapping prompt id -> number.
- ``wrong_rate_by_axis``: ``{axis: {level: rate}}``: for a prompt generated at that level of that
  axis (``Prompt.axes``), each field's value is altered with that rate, drawn per (document,
  prompt, field, axis), so a test can plant an effect that depends on one axis only.
- ``delay_s``: seconds to sleep per model call, and ``delay_per_doc_s`` more per document in it
  (to make throughput measurable, growing with the micro-batch and levelling off).
- ``memory_per_doc_mb``: memory allocated and touched per document during a call (real peak memory
  that grows with the micro-batch; past the actor's memory cap it fails as out-of-memory).
- ``oom_above``: a call of more documents than this raises ``MemoryError``; ``oom_on``: doc ids whose
  call raises it whatever its size (for testing the micro-batch halving).
- ``crash_on``: doc ids whose model call raises an exception (the whole call fails).
- ``kill_on``: doc ids whose batch kills the worker process itself (SIGKILL), as a segfault or an
  out-of-memory kill would: for testing that the orchestrator isolates such a document.
- ``hang_on``: doc ids whose batch sleeps ``hang_s`` seconds (default 3600): for batch timeouts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from typing import Any

from invoicelab.backends.base import DocInput, Extraction
from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.parsing import parse_fields
from invoicelab.prompts import Prompt


def draw(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def touched(n: int) -> bytearray | None:
    """``n`` bytes allocated and written (so they are resident), or None for 0; MemoryError past a memory cap."""
    if n <= 0:
        return None
    block = bytearray(n)
    block[::4096] = b"\x01" * len(range(0, n, 4096))
    return block


class FakeBackend:
    """Answers with the ground truth, or with the faults its options ask for."""

    uses_prompt = True

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                 seed: int = 0, device: str = "cpu"):
        self.variant, self.fields, self.seed = variant, fields, seed
        self.opts = variant.options
        self.truth: dict[str, dict[str, str | None]] = {}

    def see_truth(self, truth: dict[str, dict[str, str | None]]) -> None:
        self.truth = truth

    def _rate(self, name: str, prompt_id: str) -> float:
        value = getattr(self.opts, name)
        return float(value.get(prompt_id, 0.0) if isinstance(value, dict) else value)

    def _axis_wrong(self, doc_id: str, prompt: Prompt | None, field: str) -> bool:
        """Whether a field's value is altered by a rate planted on one of the prompt's axis levels."""
        axes = prompt.axes if prompt else {}
        return any(draw(self.seed, self.variant.name, prompt.id, doc_id, "axis", axis, field) < rates[axes[axis]]
                   for axis, rates in self.opts.wrong_rate_by_axis.items() if axes.get(axis) in rates)

    def _answer(self, doc: DocInput, prompt: Prompt | None) -> Extraction:
        prompt_id = prompt.id if prompt else ""
        roll = lambda what: draw(self.seed, self.variant.name, prompt_id, doc.doc_id, what)
        if roll("error") < self._rate("error_rate", prompt_id):
            return Extraction(fields={f: None for f in self.fields}, error="fake: injected backend error")
        if roll("garbage") < self._rate("garbage_rate", prompt_id):
            raw = "I am sorry, I cannot read this invoice."
        else:
            values = {f: self.truth.get(doc.doc_id, {}).get(f) for f in self.fields}
            if roll("wrong") < self._rate("wrong_rate", prompt_id):
                values = {f: "not-the-value" for f in values}
            values = {f: "not-the-value" if self._axis_wrong(doc.doc_id, prompt, f) else v for f, v in values.items()}
            raw = prompt.answer(values) if prompt else json.dumps(values, ensure_ascii=False)  # in the asked format
        parsed = parse_fields(raw, list(self.fields))
        return Extraction(fields=parsed.fields, raw_output=raw, parse_error=parsed.error,
                          tokens_in=len(doc.text.split()), tokens_out=len(raw.split()))

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        ids = {d.doc_id for d in docs}
        if ids & set(self.opts.kill_on):
            os.kill(os.getpid(), signal.SIGKILL)
        if ids & set(self.opts.hang_on):
            time.sleep(self.opts.hang_s)
        if ids & set(self.opts.crash_on):
            raise RuntimeError(f"fake: injected crash on a batch of {len(docs)} documents")
        if ids & set(self.opts.oom_on) or (self.opts.oom_above is not None and len(docs) > self.opts.oom_above):
            raise MemoryError(f"fake: injected out-of-memory on a call of {len(docs)} documents")
        held = touched(int(self.opts.memory_per_doc_mb * 2**20 * len(docs)))  # noqa: F841 - held during the call
        delay = self.opts.delay_s + self.opts.delay_per_doc_s * len(docs)
        if delay:
            time.sleep(delay)
        return [self._answer(d, prompt) for d in docs]

    def info(self) -> dict[str, Any]:
        return {"backend": "fake", "options": self.opts.model_dump(mode="json")}
