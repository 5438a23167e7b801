"""``precision: auto``: the most accurate precision whose estimated memory fits, chosen in the driver.

For each local-model variant with ``precision: auto``, the precisions this device can load
(``placement.runnable``) are estimated (``invoicelab.memory``) against the variant's limit
(``placement.limit_of``). Among those that fit, the one with the best measured accuracy in the store's
history (field ``all`` of table ``metrics``, same model and backend, weighted by documents) is taken
when any of them was measured; otherwise the first in ``placement.ORDER``. The choice and its reasons
are logged and written into the variant, so rows and the history record the precision really used.
Never imports Ray and never loads a model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from invoicelab.backends.placement import (
    LOCAL_BACKENDS,
    Limits,
    device_of,
    estimate_variant,
    limit_of,
    local_limits,
    model_config,
    runnable,
)
from invoicelab.memory import GB

log = logging.getLogger(__name__)


def measured_accuracy(store: Path, model: str, backend: str) -> dict[str, float]:
    """Mean accuracy (all fields, weighted by values scored) per precision of ``model`` in the store's history."""
    from invoicelab.history import ALL, connect, db_path

    if not db_path(store).is_file():
        return {}
    sql = ("SELECT precision, sum(accuracy * coalesce(n, 1)) / sum(coalesce(n, 1)) FROM metrics "
           "WHERE model = ? AND backend = ? AND field = ? AND accuracy IS NOT NULL AND precision IS NOT NULL "
           "GROUP BY precision")
    with connect(store, read_only=True) as con:
        return {str(p): float(a) for p, a in con.execute(sql, [model, backend, ALL]).fetchall()}


def choose(variant: Any, store: Path, limits: Limits, max_pages: int = 1) -> tuple[str, str]:
    """The precision for an ``auto`` variant and why (a sentence for the log)."""
    device = device_of(variant)
    candidates = runnable(device)
    limit, source = limit_of(variant, limits)
    config = model_config(variant.model, variant.revision)
    if config is None or limit is None:
        why = "no config.json on this machine" if config is None else source
        return candidates[0], f"{candidates[0]}: first in the precision order (memory not estimated: {why})"
    sizes = {p: estimate_variant(variant, config, precision=p, max_pages=max_pages).total for p in candidates}
    fitting = [p for p in candidates if sizes[p] <= limit]
    if not fitting:
        smallest = min(sizes, key=sizes.get)
        return smallest, (f"{smallest}: none fits {limit / GB:.2f} GB ({source}); the smallest estimate "
                          f"({sizes[smallest] / GB:.2f} GB), which the memory check will refuse")
    measured = measured_accuracy(store, variant.model, variant.backend)
    scored = [p for p in fitting if p in measured]
    est = ", ".join(f"{p} {sizes[p] / GB:.2f}" for p in candidates)
    if scored:
        best = max(scored, key=lambda p: (measured[p], -fitting.index(p)))
        seen = ", ".join(f"{p} {measured[p]:.1%}" for p in sorted(scored, key=lambda p: -measured[p]))
        return best, (f"{best}: best measured accuracy among those that fit {limit / GB:.2f} GB ({source}) "
                      f"in the history ({seen}); estimates GB: {est}")
    return fitting[0], (f"{fitting[0]}: the most accurate in the precision order that fits {limit / GB:.2f} GB "
                        f"({source}); no measured accuracy in the history; estimates GB: {est}")


def resolve_precisions(exp: Any, limits: Limits | None = None) -> Any:
    """The experiment with every ``precision: auto`` of a local-model variant replaced by its choice.

    Args:
        exp: The validated experiment.
        limits: The node's memory (default ``placement.local_limits``).

    Returns:
        ``exp`` itself when no variant asks for auto, else a copy with the chosen precisions.
    """
    auto = {v.name for v in exp.variants if v.backend in LOCAL_BACKENDS and v.precision == "auto"}
    if not auto:
        return exp
    limits = limits or local_limits(any(device_of(v) == "cuda" for v in exp.variants if v.name in auto))
    variants = []
    for v in exp.variants:
        if v.name in auto:
            precision, why = choose(v, exp.store_path, limits, exp.dataset.max_pages)
            log.info("variant %r: precision auto -> %s", v.name, why)
            v = v.model_copy(update={"precision": precision})
        variants.append(v)
    return exp.model_copy(update={"variants": variants})
