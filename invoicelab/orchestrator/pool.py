"""A pool of identical actors working through a queue of batches, with bounded faults.

Ray's own actor pools retry a task whose worker died without limit, never split it, and have no
per-batch timeout, so one document that kills its worker (a segfault, an out-of-memory kill)
hangs a run. Here each actor has a bounded restart budget, tasks are never retried by Ray, and:
- a batch whose worker died is split in halves (by document) and both are queued again, until the
  document responsible is alone; a document that kills its worker ``max_retries + 1`` times alone
  becomes a failed outcome (its error rows) while the rest of its batch succeeds;
- a batch running past ``batch_timeout_s`` is abandoned, its actor restarted, its units failed;
- when every actor of the pool is dead, what is left fails with the reason.
Work goes only to actors that answered ``ready()``, so a pool whose actors wait for resources
(queued behind another variant) simply has no work yet: nothing waits on a pending actor.
The driver sees small ``meta`` values only; result tables stay in the object store.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from invoicelab.config import FaultSpec, ResourceSpec
from invoicelab.orchestrator.cluster import worker_env
from invoicelab.orchestrator.resources import actor_options


@dataclass
class Work:
    """A batch for a pool: its units (documents, or (document, prompt) pairs) and their history."""

    units: list[Any]
    extra: Any = None
    """What ``make_args`` needs beside the units (the page refs of a variant batch)."""
    deaths: int = 0


@dataclass
class Outcome:
    """A finished batch: the result table's ref, or why it failed."""

    work: Work
    payload: ray.ObjectRef | None = None
    error: str = ""
    stage: str = ""


@dataclass
class _Slot:
    handle: Any
    state: str = "starting"  # starting | waiting (to ask again) | idle | busy | dead
    deaths: int = 0
    ready_failures: int = 0
    ask_at: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Pool:
    """Actors of one class and reservation, fed from one queue.

    Args:
        label: Name shown in messages (the variant's name, or "pages").
        actor_class: A ``ray.remote`` class with ``ready()`` and ``process(*args) -> (table, meta)``.
        ctor: Constructor arguments of every actor.
        res: Per-actor resources and pool size.
        faults: Restart, retry and timeout bounds.
        names: One actor name per actor (shown by the dashboard and ``ray list actors``).
        make_args: Work -> the arguments of ``process``.
        doc_of: A unit -> the id of its document (a batch is split between documents, never inside one).
    """

    def __init__(self, label: str, actor_class: Any, ctor: tuple, res: ResourceSpec, faults: FaultSpec,
                 names: list[str], make_args: Callable[[Work], tuple], doc_of: Callable[[Any], str]):
        self.label, self.faults, self.make_args, self.doc_of = label, faults, make_args, doc_of
        env = worker_env()
        self.slots = [_Slot(actor_class.options(**actor_options(res, faults, name, env)).remote(*ctor))
                      for name in names]
        self.queue: deque[Work] = deque()
        self.ready_refs: dict[ray.ObjectRef, int] = {}
        self.inflight: dict[ray.ObjectRef, tuple[int, Work, ray.ObjectRef, float]] = {}
        self.abandoned: set[ray.ObjectRef] = set()
        for i in range(len(self.slots)):
            self._ask_ready(i)

    # --- what the driver's loop calls ---------------------------------------------------------

    def put(self, work: Work, front: bool = False) -> None:
        (self.queue.appendleft if front else self.queue.append)(work)

    def refs(self) -> list[ray.ObjectRef]:
        """Refs the driver waits on for this pool."""
        return [*self.ready_refs, *self.inflight, *self.abandoned]

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self.queue and not self.inflight

    @property
    def running(self) -> bool:
        """Whether some actor of the pool holds its reservation (started and not dead)."""
        return any(s.state in ("idle", "busy") for s in self.slots)

    def placements(self) -> list[dict[str, Any]]:
        """What each actor that started reported: node id, GPU ids, name, pid."""
        return [{k: v for k, v in s.info.items() if k != "load_error"} for s in self.slots if s.info]

    def handle(self, ref: ray.ObjectRef) -> list[Outcome]:
        """React to one finished ref of this pool; returns the batches that finished or failed."""
        if ref in self.abandoned:
            self.abandoned.discard(ref)
            return []
        if ref in self.ready_refs:
            self._on_ready(self.ready_refs.pop(ref), ref)
            return self._drain_if_dead()
        index, work, payload, _ = self.inflight.pop(ref)
        try:
            ray.get(ref)
        except RayActorError as err:
            return self._died(index, work, err) + self._drain_if_dead()
        except RayTaskError as err:
            self.slots[index].state = "idle"
            return [Outcome(work, error=f"{self.label} failed: {_short(err)}", stage="pipeline")]
        self.slots[index].state = "idle"
        return [Outcome(work, payload=payload)]

    def dispatch(self) -> None:
        """Ask restarted actors whether they are back; give queued batches to idle actors."""
        now = time.monotonic()
        for index, slot in enumerate(self.slots):
            if slot.state == "waiting" and now >= slot.ask_at:
                slot.state = "starting"
                self._ask_ready(index)
        for index, slot in enumerate(self.slots):
            if not self.queue:
                return
            if slot.state == "idle":
                work = self.queue.popleft()
                payload, meta = slot.handle.process.options(num_returns=2).remote(*self.make_args(work))
                self.inflight[meta] = (index, work, payload, time.monotonic())
                slot.state = "busy"

    def expire(self) -> list[Outcome]:
        """Abandon batches past the timeout: restart their actors, fail their units."""
        limit = self.faults.batch_timeout_s
        now, out = time.monotonic(), []
        for ref, (index, work, _, started) in list(self.inflight.items()):
            if limit is not None and now - started > limit:
                del self.inflight[ref]
                self.abandoned.add(ref)
                out.append(Outcome(work, error=f"batch timed out after {limit:g} s ({self.label})", stage="timeout"))
                slot = self.slots[index]
                slot.deaths += 1
                ray.kill(slot.handle, no_restart=slot.deaths > self.faults.max_restarts)
                self._restarted(index)
        return out + self._drain_if_dead()

    def shutdown(self) -> None:
        for slot in self.slots:
            ray.kill(slot.handle, no_restart=True)
            slot.state = "dead"

    # --- faults ---------------------------------------------------------------------------------

    def _ask_ready(self, index: int) -> None:
        self.ready_refs[self.slots[index].handle.ready.remote()] = index

    def _on_ready(self, index: int, ref: ray.ObjectRef) -> None:
        slot = self.slots[index]
        try:
            slot.info = ray.get(ref)
            slot.state, slot.ready_failures = "idle", 0
        except ActorUnavailableError:  # restarting: ask again shortly
            slot.state, slot.ask_at = "waiting", time.monotonic() + 0.2
        except RayActorError as err:
            slot.ready_failures += 1
            if slot.deaths > self.faults.max_restarts or slot.ready_failures > 3:
                slot.state, slot.info["died"] = "dead", _short(err)
            else:
                self._ask_ready(index)  # a restart in progress answers late

    def _restarted(self, index: int) -> None:
        slot = self.slots[index]
        if slot.deaths > self.faults.max_restarts:
            slot.state = "dead"
            slot.info["died"] = f"restarted {self.faults.max_restarts} times, no restarts left"
        else:
            slot.state = "starting"
            self._ask_ready(index)

    def _died(self, index: int, work: Work, err: Exception) -> list[Outcome]:
        """The worker died under ``work``: split it, retry it, or fail its single document."""
        self.slots[index].deaths += 1
        self._restarted(index)
        docs = list(dict.fromkeys(self.doc_of(u) for u in work.units))
        if len(docs) > 1:
            first = set(docs[: len(docs) // 2])
            self.put(Work([u for u in work.units if self.doc_of(u) not in first], work.extra), front=True)
            self.put(Work([u for u in work.units if self.doc_of(u) in first], work.extra), front=True)
            return []
        work.deaths += 1
        if work.deaths > self.faults.max_retries:
            reason = f"worker died while processing this document ({work.deaths} times): {_short(err)}"
            return [Outcome(work, error=reason, stage="worker")]
        self.put(work, front=True)
        return []

    def _drain_if_dead(self) -> list[Outcome]:
        if any(s.state != "dead" for s in self.slots) or not self.queue:
            return []
        causes = "; ".join(sorted({s.info.get("died", "died") for s in self.slots}))
        out = [Outcome(w, error=f"all {len(self.slots)} actors of {self.label} died ({causes})", stage="worker")
               for w in self.queue]
        self.queue.clear()
        return out


def _short(err: Exception) -> str:
    """The informative line of a Ray error (its cause), at most 300 characters."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("class_name", "actor_id", "pid", "name", "namespace", "ip"))]
    return (useful[-1] if useful else type(err).__name__)[:300]
