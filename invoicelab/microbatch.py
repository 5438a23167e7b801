"""Generation micro-batches: cutting an actor's batch into model calls, and surviving out-of-memory.

An actor is handed a batch of documents (the Ray batch, ``batch_size``); the model sees them in
micro-batches: documents sorted by prompt length (so a call pads little), at most ``size`` of them,
and at most ``token_budget`` prompt tokens counted padded (documents x longest prompt). When a call
runs out of memory (a CUDA out-of-memory error, or a CPU allocation failure that the library raises
as an exception) the micro-batch is halved and the same documents are tried again in halves, down
to one; a document that runs out of memory alone gets an error with the reason, and the rest go on.
The halved size stays for the rest of the ``MicroBatcher``'s life (an actor that ran out of memory at
8 will again at 8), and every answer carries the size in force when it was made.

Pure logic: no Ray, no torch (an out-of-memory error is recognised by its type name and message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate",
               "outofmemory")
"""Lower-case pieces of the messages torch, CUDA and the allocators raise when memory runs out."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception says that memory ran out (``MemoryError``, ``torch.OutOfMemoryError``, the CPU
    allocator's "can't allocate memory", CUDA's "out of memory")."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in OOM_MARKERS)


def plan_calls(lengths: Sequence[int], size: int, token_budget: int | None = None,
               by_length: bool = True) -> list[list[int]]:
    """Indices of the items cut into model calls.

    Args:
        lengths: Prompt tokens of each item.
        size: Most items per call.
        token_budget: Most prompt tokens per call, counted padded (items x longest); an item longer than
            the budget goes alone. None: no limit.
        by_length: Sort by length first (ties keep their order); else keep the items' order.

    Returns:
        Calls, each a list of indices into ``lengths``; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if by_length else list(range(len(lengths)))
    calls: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        wider = max(longest, lengths[i])
        over_budget = token_budget is not None and wider * (len(current) + 1) > token_budget
        if current and (len(current) >= size or over_budget):
            calls.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        longest = wider
    if current:
        calls.append(current)
    return calls


@dataclass
class Answered(Generic[T]):
    """What became of one item: its answer, or the out-of-memory error it hit alone.

    Attributes:
        value: The call's answer for the item (None when ``error``).
        error: Why there is no answer (out of memory with the item alone), else None.
        call_size: Items in the call that answered it.
        micro_batch: The micro-batch size in force when that call was made.
        oom_splits: How many out-of-memory failures the item went through before this.
    """

    value: T | None
    error: str | None
    call_size: int
    micro_batch: int
    oom_splits: int


class MicroBatcher:
    """Runs items through a model call in micro-batches, halving the size on out-of-memory.

    Args:
        size: The micro-batch to start with.
        token_budget: Most padded prompt tokens per call (None: no limit).
        by_length: Group items by prompt length.
    """

    def __init__(self, size: int, token_budget: int | None = None, by_length: bool = True):
        self.size, self.token_budget, self.by_length = max(1, size), token_budget, by_length
        self.halvings = 0
        self.last_oom = ""
        """The last out-of-memory error met (type and message), "" while none."""

    def run(self, lengths: Sequence[int], call: Callable[[list[int]], list[T]],
            measured: Callable[[list[int], list[T]], None] | None = None) -> list[Answered[T]]:
        """Answer every item, calling ``call(indices)`` (one answer per index, in order) per micro-batch.

        Args:
            lengths: Prompt tokens of each item.
            call: The model call; an exception that is not out-of-memory propagates to the caller.
            measured: Told each successful call's indices and answers (e.g. to read its meter).

        Returns:
            One ``Answered`` per item, in the items' order.
        """
        done: dict[int, Answered[T]] = {}
        splits = dict.fromkeys(range(len(lengths)), 0)
        queue = plan_calls(lengths, self.size, self.token_budget, self.by_length)
        while queue:
            group = queue.pop(0)
            if len(group) > self.size:  # the size was halved since this call was planned
                queue[:0] = [group[i:i + self.size] for i in range(0, len(group), self.size)]
                continue
            try:
                answers = call(group)
            except Exception as err:  # noqa: BLE001 - only out-of-memory is handled; the rest propagates
                if not is_out_of_memory(err):
                    raise
                for i in group:
                    splits[i] += 1
                self.last_oom = f"{type(err).__name__}: {str(err)[:200]}"
                if len(group) == 1:
                    done[group[0]] = Answered(None, out_of_memory_alone(err), 1, self.size, splits[group[0]])
                    continue
                self.size = max(1, len(group) // 2)
                self.halvings += 1
                queue[:0] = [group[:self.size], group[self.size:]]
                continue
            if measured is not None:
                measured(group, answers)
            for i, answer in zip(group, answers, strict=True):
                done[i] = Answered(answer, None, len(group), self.size, splits[i])
        return [done[i] for i in range(len(lengths))]


def out_of_memory_alone(err: BaseException) -> str:
    """The error of a document that ran out of memory even in a call of its own."""
    return f"out of memory with the document alone (micro-batch 1): {type(err).__name__}: {str(err)[:300]}"
