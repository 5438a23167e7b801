"""Which measured configuration to run on the hardware at hand, from the results store: ``invoicelab recommend``.

A candidate is one (run, variant, prompt) of the history: its per-field accuracies (table ``metrics``) and
its speed, memory and cost (table ``performance``, see ``invoicelab.history_perf``). Each is checked against
the user's ``Constraints`` on the given ``Cluster``: the actors that fit it come from the variant's per-actor
resources and measured memory, and the pool's docs/s is one actor's measured model docs/s times the actors
(linear scaling, an assumption stated in the output). Evidence measured on the same hardware ranks first;
other hardware is named. Accuracy intervals are Wilson score intervals over the values scored; the paired
tests of the run's own analysis (summary.json) tell the choice from the runner-up. When an interval does not
clear a threshold, or the two best cannot be told apart, it names the small experiment to run next (documents
needed, from ``stats.documents_needed`` for a pair).

Pure logic: reads the store, never imports Ray or a model, never writes, never exits.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GB = 1e9
HOST_SHARE = 0.9
"""Share of a node's memory the actors may fill together (the rest: the OS, Ray, the page stage)."""
PREFER = ("accuracy", "speed", "cost")


@dataclass(frozen=True)
class Constraints:
    """What a configuration must meet. ``None`` leaves a limit out.

    Attributes:
        min_accuracy: Field -> lowest accuracy; field ``all`` is the micro accuracy over every field.
        max_memory_bytes: Highest peak memory of one actor (GPU memory for GPU variants, else resident).
        max_cost_per_1000: Highest cost per 1,000 documents (the run's prices, or ``cpu_hour``/``gpu_hour``).
        min_docs_per_s: Lowest docs/s of the variant's whole pool on the cluster.
        dataset, name: Only runs whose dataset description / experiment name contains this text.
        prefer: Among configurations that meet everything: ``accuracy``, ``speed`` or ``cost`` first.
        confidence: Level of the accuracy intervals.
        cpu_hour, gpu_hour: Prices to cost every candidate with (None: each run's own cost).
    """

    min_accuracy: dict[str, float] = field(default_factory=dict)
    max_memory_bytes: float | None = None
    max_cost_per_1000: float | None = None
    min_docs_per_s: float | None = None
    dataset: str | None = None
    name: str | None = None
    prefer: str = "accuracy"
    confidence: float = 0.95
    cpu_hour: float | None = None
    gpu_hour: float | None = None


@dataclass(frozen=True)
class Cluster:
    """The hardware to recommend for: CPUs, host memory and GPUs of all nodes together."""

    cpus: float
    memory_bytes: float | None = None
    gpus: int = 0
    gpu_memory_bytes: float | None = None
    gpu_name: str | None = None
    processor: str | None = None

    @classmethod
    def from_hardware(cls, hw: dict[str, Any]) -> Cluster:
        """From ``report.hardware()``'s dict, with optional ``gpus`` (names) and ``gpu_memory_bytes`` (one GPU's)."""
        gpus = hw.get("gpus") or []
        names = gpus if isinstance(gpus, list) else []
        return cls(cpus=float(hw.get("cpus") or 1), memory_bytes=hw.get("memory_bytes"),
                   gpus=len(names) if names else int(gpus or 0), gpu_memory_bytes=hw.get("gpu_memory_bytes"),
                   gpu_name=str(names[0]) if names else hw.get("gpu_name"),
                   processor=hw.get("processor") or hw.get("machine"))

    def label(self) -> str:
        mem = f", {self.memory_bytes / GB:.0f} GB" if self.memory_bytes else ""
        gpu = f", {self.gpus} x {self.gpu_name or 'GPU'}" if self.gpus else ", no GPU"
        vram = f" ({self.gpu_memory_bytes / GB:.0f} GB)" if self.gpus and self.gpu_memory_bytes else ""
        return f"{self.cpus:g} CPUs ({self.processor or '?'}){mem}{gpu}{vram}"

    def same(self, other: Cluster) -> bool:
        """Same kind of machine for speed: the same GPU model, or (CPU only) the same processor and CPU count."""
        if self.gpus or other.gpus:
            return bool(self.gpus and other.gpus) and (self.gpu_name or "") == (other.gpu_name or "")
        return self.cpus == other.cpus and (self.processor or "") == (other.processor or "")


@dataclass
class Recommendation:
    """The answer: a choice (or none), alternatives, near misses with what each fails, what to run next."""

    cluster: str
    choice: dict[str, Any] | None
    alternatives: list[dict[str, Any]]
    near_misses: list[dict[str, Any]]
    next_experiments: list[str]
    notes: list[str]
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(p: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed over ``n`` values (statsmodels' ``proportion_confint``)."""
    if not n:
        return 0.0, 1.0
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(p * n, n, alpha=1 - confidence, method="wilson")
    return max(0.0, float(lo)), min(1.0, float(hi))


def values_needed(p: float, threshold: float, confidence: float = 0.95, max_n: int = 100_000) -> int | None:
    """Values at accuracy ``p`` for the Wilson interval's lower end to clear ``threshold`` (None: never)."""
    if p <= threshold or wilson(p, max_n, confidence)[0] < threshold:
        return None
    lo, hi = 1, max_n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wilson(p, mid, confidence)[0] >= threshold else (mid + 1, hi)
    return lo


def actors_that_fit(c: dict[str, Any], cluster: Cluster) -> tuple[int, str]:
    """How many actors of a candidate's pool fit the cluster, and the resource that bounds them."""
    cpus, gpus = c.get("num_cpus") or 1.0, c.get("num_gpus") or 0.0
    per_actor = (c.get("memory_gb") or 0) * GB or c.get("peak_memory_bytes") or 0
    limits = [(math.floor(cluster.cpus / cpus + 1e-9), f"{cpus:g} CPU(s) per actor, {cluster.cpus:g} CPUs")]
    if gpus >= 1:
        limits.append((math.floor(cluster.gpus / gpus + 1e-9), f"{gpus:g} GPU(s) per actor, {cluster.gpus} GPU(s)"))
    elif gpus:  # a fraction: several actors share one GPU, as many as its memory holds
        per_gpu, why = math.floor(1 / gpus + 1e-9), f"{gpus:g} GPU per actor, {cluster.gpus} GPU(s)"
        peak = c.get("peak_memory_bytes") if c.get("gpu_memory") else None
        if peak and cluster.gpu_memory_bytes and cluster.gpu_memory_bytes // peak < per_gpu:
            per_gpu = int(cluster.gpu_memory_bytes // peak)
            why = f"{peak / GB:.1f} GB GPU peak per actor, {cluster.gpu_memory_bytes / GB:.0f} GB per GPU"
        limits.append((per_gpu * cluster.gpus, why))
    elif per_actor and cluster.memory_bytes:
        limits.append((math.floor(HOST_SHARE * cluster.memory_bytes / per_actor),
                       f"{per_actor / GB:.1f} GB per actor, {HOST_SHARE:.0%} of {cluster.memory_bytes / GB:.0f} GB"))
    n, why = min(limits, key=lambda x: x[0])
    return max(n, 0), why


def candidates(store: Path, cons: Constraints, cluster: Cluster) -> list[dict[str, Any]]:
    """Every recorded (run, variant, prompt) with accuracies, performance, fit and the constraints it fails."""
    from invoicelab.history import ALL, history
    from invoicelab.history_perf import performance

    perf = {(p["run_id"], p["variant"], p["prompt"]): p for p in performance(store)}
    metrics = history(store, dataset=cons.dataset, name=cons.name)
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in metrics.to_dict("records"):
        key = (r["run_id"], r["variant"], r["prompt"])
        c = found.setdefault(key, {"run_id": r["run_id"], "name": r["name"], "dataset": r["dataset"],
                                   "finished_at": str(r["finished_at"]), "variant": r["variant"],
                                   "prompt": r["prompt"], "model": r["model"], "precision": r["precision"],
                                   "accuracy": {}})
        if r["accuracy"] == r["accuracy"] and r["accuracy"] is not None:
            n = int(r["n"]) if r["n"] == r["n"] and r["n"] is not None else 0
            low, high = wilson(float(r["accuracy"]), n, cons.confidence)
            c["accuracy"][r["field"]] = {"value": float(r["accuracy"]), "n": n, "low": low, "high": high}
    out = []
    for key, c in found.items():
        p = perf.get(key, {})
        c.update({k: p.get(k) for k in ("backend", "docs", "errors", "docs_per_s", "peak_memory_bytes", "gpu_memory",
                                        "cost_per_1000", "batch_size", "micro_batch", "num_cpus", "num_gpus",
                                        "memory_gb", "run_dir", "latency_s", "cost_mean")})
        c["model"], c["precision"] = _text(c["model"]) or p.get("model"), _text(c["precision"]) or p.get("precision")
        if cons.cpu_hour is not None or cons.gpu_hour is not None:
            from invoicelab.views import cost_per_1000

            c["cost_per_1000"] = cost_per_1000(c.get("latency_s"), c.get("cost_mean"), c.get("num_cpus") or 1.0,
                                               c.get("num_gpus") or 0.0, cons.cpu_hour or 0.0, cons.gpu_hour or 0.0)
        there = Cluster.from_hardware(p.get("hardware") or {})
        c["hardware"], c["same_hardware"] = there.label(), bool(p.get("hardware")) and there.same(cluster)
        c["actors"], c["actors_bound"] = actors_that_fit(c, cluster)
        c["pool_docs_per_s"] = c["docs_per_s"] * c["actors"] if c.get("docs_per_s") else None
        c["score"] = c["accuracy"].get(ALL, {}).get("value")
        c["failures"] = failures(c, cons)
        out.append(c)
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def failures(c: dict[str, Any], cons: Constraints) -> list[str]:
    """The constraints a candidate fails, each named with its measured value and the limit."""
    out = []
    for f, least in cons.min_accuracy.items():
        a = c["accuracy"].get(f)
        if a is None:
            out.append(f"accuracy of {f}: not measured in this run")
        elif a["value"] < least:
            out.append(f"accuracy of {f} {a['value']:.3f} < {least:g} (interval {a['low']:.2f}-{a['high']:.2f}, "
                       f"n={a['n']})")
    mem, cost, speed = c.get("peak_memory_bytes"), c.get("cost_per_1000"), c.get("pool_docs_per_s")
    if c["actors"] < 1:
        out.append(f"does not fit the cluster ({c['actors_bound']})")
    if cons.max_memory_bytes is not None:
        if mem is None:
            out.append("peak memory: not measured")
        elif mem > cons.max_memory_bytes:
            out.append(f"peak memory {mem / GB:.2f} GB > {cons.max_memory_bytes / GB:g} GB")
    if cons.max_cost_per_1000 is not None:
        if cost is None:
            out.append("cost per 1,000 documents: not measured (the run had no prices; give --cpu-hour/--gpu-hour)")
        elif cost > cons.max_cost_per_1000:
            out.append(f"cost per 1,000 documents {cost:.4g} > {cons.max_cost_per_1000:g}")
    if cons.min_docs_per_s is not None and c["actors"] >= 1:
        if speed is None:
            out.append("docs/s: not measured")
        elif speed < cons.min_docs_per_s:
            out.append(f"docs/s {speed:.3g} with {c['actors']} actor(s) < {cons.min_docs_per_s:g}")
    return out


def _rank_key(c: dict[str, Any], cons: Constraints) -> tuple:
    needed = [c["accuracy"][f]["value"] for f in cons.min_accuracy if f in c["accuracy"]]
    acc = sum(needed) / len(needed) if needed else (c["score"] or 0.0)
    speed, cost = c.get("pool_docs_per_s") or 0.0, c.get("cost_per_1000")
    cheap = -(cost if cost is not None else math.inf)
    order = {"accuracy": (acc, speed, cheap), "speed": (speed, acc, cheap), "cost": (cheap, acc, speed)}
    return (c["same_hardware"], *order[cons.prefer], c["finished_at"])


def recommend(store: Path, hardware: dict[str, Any], cons: Constraints) -> Recommendation:
    """The best measured configuration that meets ``cons`` on ``hardware``, with evidence and next experiments.

    Args:
        store: The results store folder (``history.duckdb``).
        hardware: The cluster: ``report.hardware()``'s keys, plus ``gpus`` (names) and ``gpu_memory_bytes``.
        cons: The constraints.

    Returns:
        A ``Recommendation``; ``choice`` is None when no measured configuration meets every constraint.

    Raises:
        ValueError: an unknown ``prefer``.
    """
    if cons.prefer not in PREFER:
        raise ValueError(f"unknown preference {cons.prefer!r}; available: {', '.join(PREFER)}")
    cluster = Cluster.from_hardware(hardware)
    found = candidates(store, cons, cluster)
    meeting = sorted((c for c in found if not c["failures"]), key=lambda c: _rank_key(c, cons), reverse=True)
    notes = [("docs/s of a pool = one actor's measured model docs/s x actors (assumes linear scaling; start-up "
              "and the page stage are not counted)")]
    datasets = sorted({c["dataset"] for c in found})
    if len(datasets) > 1:
        notes.append(f"the evidence spans {len(datasets)} datasets ({'; '.join(datasets)}): accuracy on one is not "
                     "accuracy on another; --dataset keeps one")
    if not meeting:
        misses = sorted(found, key=lambda c: (len(c["failures"]), not c["same_hardware"], -(c["score"] or 0)))[:5]
        return Recommendation(cluster.label(), None, [], [_brief(c) for c in misses], _fixes(misses[:3], cons),
                              notes, len(found))
    choice = meeting[0]
    if not choice["same_hardware"]:
        notes.append(f"no configuration meeting the constraints was measured on this hardware; the evidence comes "
                     f"from {choice['hardware']}: speed, memory and cost may differ here")
    return Recommendation(cluster.label(), _brief(choice), [_brief(c) for c in meeting[1:4]], [],
                          _next(choice, meeting[1:], cons), notes, len(found))


def _brief(c: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "name", "dataset", "finished_at", "variant", "prompt", "backend", "model", "precision",
            "batch_size", "micro_batch", "actors", "actors_bound", "num_cpus", "num_gpus", "docs_per_s",
            "pool_docs_per_s", "peak_memory_bytes", "cost_per_1000", "accuracy", "docs", "errors", "hardware",
            "same_hardware", "failures", "run_dir")
    return {k: c.get(k) for k in keep}


def _next(choice: dict[str, Any], rest: list[dict[str, Any]], cons: Constraints) -> list[str]:
    """Small experiments that would firm the choice up: more documents for a thin interval or a close runner-up."""
    out = []
    arm = f"{choice['variant']} with prompt {choice['prompt']}"
    for f, least in cons.min_accuracy.items():
        a = choice["accuracy"][f]
        if a["low"] < least:
            n = values_needed(a["value"], least, cons.confidence)
            more = f"about {n} scored values (now {a['n']})" if n else "many more documents"
            out.append(f"{f}: the {cons.confidence:.0%} interval of {arm} ({a['low']:.2f}-{a['high']:.2f}) reaches "
                       f"below {least:g}; to show it clears {least:g} at the measured {a['value']:.2f}, run it on "
                       f"{more}")
    if rest:
        out += _versus(choice, rest[0], cons)
    if not choice["same_hardware"]:
        out.append(f"measure {arm} on this hardware: a short run of it (e.g. 20 documents) records its speed "
                   "and memory here; `invoicelab tune` finds its batch size")
    return out


def _versus(a: dict[str, Any], b: dict[str, Any], cons: Constraints) -> list[str]:
    """When the runner-up was run beside the choice and its paired test did not separate them: documents needed."""
    from invoicelab.stats import documents_needed

    if a["run_id"] != b["run_id"] or not a.get("run_dir"):
        return []
    try:
        tests = json.loads((Path(a["run_dir"]) / "summary.json").read_text(encoding="utf-8")).get("tests") or []
    except (OSError, ValueError):
        return []
    arms = {(a["variant"], a["prompt"]), (b["variant"], b["prompt"])}
    fields = list(cons.min_accuracy) or ["all"]
    out = []
    for t in tests:
        if {(t["a_variant"], t["a_prompt"]), (t["b_variant"], t["b_prompt"])} != arms or t["field"] not in fields:
            continue
        if t.get("significant") or not t.get("n"):
            continue
        try:
            need = documents_needed(t["a_only"] / t["n"], t["b_only"] / t["n"], alpha=1 - cons.confidence)
            how = f"about {need} documents would detect the difference seen (power 0.8)"
        except ValueError as err:
            how = f"no number of documents is planned: {err}"
        out.append(f"{t['field']}: {t['a']} and {t['b']} are not told apart by the run's paired test "
                   f"(B-A {t['diff']:+.2f}, interval {t['low']:+.2f} to {t['high']:+.2f}, n={t['n']}); {how}")
    return out


def _fixes(misses: list[dict[str, Any]], cons: Constraints) -> list[str]:
    """What to try for the nearest misses, by the constraint they fail."""
    out = []
    for c in misses:
        arm = f"{c['variant']}/{c['prompt']}"
        for f in c["failures"]:
            if f.startswith("accuracy of") and "not measured" not in f:
                field_name = f.split()[2]
                a, least = c["accuracy"][field_name], cons.min_accuracy[field_name]
                if a["high"] >= least:  # by symmetry, the upper end falls below least where 1-p's lower end clears 1-least
                    n = values_needed(1 - a["value"], 1 - least, cons.confidence)
                    out.append(f"{arm}: {field_name}'s interval ({a['low']:.2f}-{a['high']:.2f}, n={a['n']}) reaches "
                               f"{least:g}; a run on about {n or 'many'} values would settle whether it meets it")
            elif f.startswith("peak memory"):
                out.append(f"{arm}: a lower precision (`precision: auto`), a smaller micro-batch or `offload:` "
                           "cuts its memory")
            elif f.startswith("docs/s"):
                out.append(f"{arm}: more actors or a tuned batch size (`batch_size: auto`, `invoicelab tune`) "
                           "raise its docs/s")
            elif "not measured" in f:
                out.append(f"{arm}: {f.split(':')[0]} was not measured; a short run here records it")
    return list(dict.fromkeys(out))
