"""A stage's resource settings as ``map_batches`` arguments: the only place they are translated."""

from __future__ import annotations

from typing import Any

from ray.data import ActorPoolStrategy

from invoicelab.config import ResourceSpec


def actor_pool_args(res: ResourceSpec, batch_size: int) -> dict[str, Any]:
    """``map_batches`` keyword arguments for a fixed pool of ``res.actors`` actors."""
    args: dict[str, Any] = {
        "compute": ActorPoolStrategy(size=res.actors),
        "num_cpus": res.num_cpus,
        "batch_size": batch_size,
        "batch_format": "pyarrow",
    }
    if res.num_gpus:
        args["num_gpus"] = res.num_gpus
    return args
