"""Tuning batch sizes on the cluster: `batch_size: auto` at the start of a run, and `invoicelab tune`.

For each variant to tune, one probe actor is started with the variant's own reservation (its GPU, its
CPUs, its memory cap), so the probes measure the hardware the variant will run on. The actor reports
its hardware first; with the model, precision, backend versions and workload that makes the profile
key (``invoicelab.profiles``). A saved profile of the same key is reused unless ``tuning.retune``;
otherwise the actor reads the pages of the run's first rows still to compute and probes
(``invoicelab.tuning``) by answering them; the decision is saved. The rows the probes answered go
from the actor to the writer as the run's own rows and leave the plan's ``todo``: probing costs only
what its smaller sizes lose. The largest size probed is the documents to compute (a larger call
never happens in the run); a profile that stopped there is probed again by a run with more. Variants
are tuned one after another, so probes never share the CPUs. Only refs and small dicts reach the
driver.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from invoicelab.actors.extractor import Todo
from invoicelab.actors.ray_actors import TunerActor
from invoicelab.data.sources import cache_root
from invoicelab.orchestrator.cluster import worker_env
from invoicelab.orchestrator.plan import Plan, VariantPlan
from invoicelab.orchestrator.resources import actor_options
from invoicelab.profiles import load_profile, nearest_profile, profile_key, profiles_dir, save_profile
from invoicelab.tuning import probes_need, ray_batch

log = logging.getLogger(__name__)

TUNABLE = ("ocr-llm", "transformers-vlm", "fake", "vllm")
"""Backends whose batch the tuner probes: the generation micro-batch, or vLLM's concurrency (``max_num_seqs``);
rules and served models have no batch of theirs to tune."""


DEFAULT_BATCH = 4
"""The batch of an `auto` variant whose backend has no batch to tune (the schema's default batch size)."""


@dataclass
class Tuned:
    """What tuning gave one variant."""

    variant: str
    micro_batch: int
    batch_size: int
    source: str  # "probed" | "profile" | "failed" | "default" (nothing to tune)
    profile: str = ""
    reason: str = ""
    docs_per_s: float | None = None
    tuning_s: float = 0.0
    probes: list[dict[str, Any]] = field(default_factory=list)
    why_probed: str = ""
    answered: int = 0
    """Documents the probes answered."""
    rows_kept: int = 0
    """Of those, result rows of the run (written, not computed again)."""


def auto_variants(plan: Plan) -> list[VariantPlan]:
    """Variants of the plan with ``batch_size: auto`` that have rows to compute."""
    return [v for v in plan.variants if v.todo and "auto" in (v.variant.batch_size,
                                                                 getattr(v.variant, "max_num_seqs", None))]


def tune_plan(plan: Plan, variants: list[VariantPlan], writer: Any, retune: bool | None = None) -> list[Tuned]:
    """Tune ``variants`` of the plan one after another and set their batch sizes (micro-batch and Ray batch).

    Args:
        plan: The run's plan (the cluster must be connected). The rows the probes answered are written and
            taken out of their variant's ``todo``.
        variants: The variants to tune (their settings are changed in place).
        writer: The run's ``WriterActor``, which writes the probes' rows.
        retune: Probe even when a profile is saved (None: the experiment's ``tuning.retune``).
    """
    out = []
    for vplan in variants:
        tuned = tune_variant(plan, vplan, plan.exp.tuning.retune if retune is None else retune, writer)
        apply(vplan.variant, tuned)
        v = vplan.variant
        log.info("variant %s: micro-batch %d, batch %d (%s)", v.name, tuned.micro_batch, tuned.batch_size,
                 tuned.reason)
        out.append(tuned)
    return out


def tune_variant(plan: Plan, vplan: VariantPlan, retune: bool, writer: Any) -> Tuned:
    """Probe (or look up) one variant's micro-batch on its own reservation."""
    v = vplan.variant
    if v.backend not in TUNABLE:
        size = v.batch_size if isinstance(v.batch_size, int) else DEFAULT_BATCH
        return Tuned(v.name, size, size, "default", reason=f"the {v.backend} backend has no batch to tune; "
                     f"batch size {size}, one call per batch")
    prompts = {pid: asdict(p) for pid, p in vplan.prompts.items() if p is not None}
    options = actor_options(v.resources, v.faults, f"{plan.exp.name}/{v.name}/tuner", worker_env())
    options["max_restarts"] = 0
    actor = None
    try:
        actor = ray.remote(TunerActor).options(**options).remote(
            plan.exp.model_dump_json(), v.name, prompts, asdict(vplan.setting), str(cache_root()))
        return _tune_with(actor, plan, vplan, retune, writer)
    except Exception as err:  # noqa: BLE001 - a variant that cannot be tuned runs at a safe size, and says so
        reason = f"tuning failed: {type(err).__name__}: {str(err)[:300]}"
        log.warning("variant %s: %s", v.name, reason)
        return Tuned(v.name, 1, 1, "failed", reason=reason)
    finally:
        if actor is not None:
            ray.kill(actor)


def probe_units(plan: Plan, vplan: VariantPlan) -> tuple[list[Todo], bool]:
    """The rows the probes answer: the first prompt's rows still to compute, in the run's order (their answers
    are kept), or, when all are computed, its computed ones (answered only to measure)."""
    first = next(iter(vplan.prompts))
    todo = [(plan.docs[i].doc_id, pid, key) for i, pid, key in vplan.todo if pid == first]
    if todo:
        return todo, True
    return [(plan.docs[i].doc_id, pid, key) for key, (i, pid) in vplan.expected.items() if pid == first], False


def _tune_with(actor: Any, plan: Plan, vplan: VariantPlan, retune: bool, writer: Any) -> Tuned:
    v, spec = vplan.variant, plan.exp.tuning
    units, keep = probe_units(plan, vplan)
    largest = max(1, min(spec.max_micro_batch, len(units)))  # a call larger than the run's documents never happens
    hardware = ray.get(actor.hardware.remote())
    key = profile_key(v, hardware)
    folder = profiles_dir(spec)
    saved = None if retune else load_profile(folder, key)
    if saved is not None and not probed_too_few(saved, largest):
        return Tuned(v.name, saved["micro_batch"], saved["batch_size"], "profile", str(folder),
                     f"saved profile ({saved.get('reason', '')})", saved.get("docs_per_s"), 0.0, saved["probes"])
    earlier = nearest_profile(folder, key)
    why = ("retune asked" if retune else
           f"the saved profile probed sizes up to {saved['largest']} only (its run had that many documents)"
           if saved is not None else f"changed since the last profile: {', '.join(earlier)}" if earlier
           else "no profile for this model, precision and hardware")
    units = units[:probes_need(largest, spec.sample_docs, spec.rounds)]
    index = {d.doc_id: i for i, d in enumerate(plan.docs)}
    rows = [{**plan.docs[i].row(), "doc_sha256": plan.hashes[i]}
            for i in sorted({index[doc_id] for doc_id, _, _ in units})]
    start = time.perf_counter()
    if not ray.get(actor.read.remote(rows, units, keep)):
        raise RuntimeError("none of the documents to probe with could be read")
    limit = ray.get(actor.memory_limit.remote())
    decision_ref, rows_ref = actor.tune.options(num_returns=2).remote(
        largest, spec.plateau, limit, spec.memory_margin, spec.rounds, spec.sample_docs)
    decision = ray.get(decision_ref)
    kept = set(decision.pop("kept"))
    if kept:  # real rows of the run: written, and not computed again
        ray.get(writer.write.remote(rows_ref, v.name))
        vplan.todo = [t for t in vplan.todo if t[2] not in kept]
    batch = decision["micro_batch"] if v.backend == "vllm" else ray_batch(decision["micro_batch"], len(plan.docs))
    path = save_profile(folder, key, decision, batch)
    return Tuned(v.name, decision["micro_batch"], batch, "probed", str(path), decision["reason"],
                 decision["docs_per_s"], time.perf_counter() - start, decision["probes"], why,
                 decision["answered"], len(kept))


def probed_too_few(saved: dict[str, Any], largest: int) -> bool:
    """Whether a saved profile measured every size it could and stopped below ``largest`` only because its run
    had fewer documents (then a run with more probes again)."""
    return saved.get("reason", "").startswith("measured every size") and saved.get("largest", largest) < largest


def apply(variant: Any, tuned: Tuned) -> None:
    """Set a variant's automatic sizes from its tuning: vLLM's concurrency and Ray Data batch, or the
    generation micro-batch and the Ray batch handed to an actor."""
    if variant.backend == "vllm":
        if variant.max_num_seqs == "auto":
            variant.max_num_seqs = tuned.micro_batch
        if variant.batch_size == "auto":
            variant.batch_size = tuned.micro_batch  # one Ray Data batch keeps the engine's queue full
        return
    variant.batching.micro_batch = tuned.micro_batch
    variant.batch_size = tuned.batch_size
