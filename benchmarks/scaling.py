"""Scaling from 1 to 8 logical GPUs on a simulated 4-node cluster: efficiency at 8.

``ray.cluster_utils.Cluster`` starts a head (2 CPUs, no GPU: page stage and writer) and 4 worker
nodes with 2 logical GPUs and 2 CPUs each. The fake backend sleeps ``DELAY_S`` per batch while its
actor holds ``num_gpus: 1``, so 8 actors can only run on 8 different GPUs. Each pool size runs on
the same number of batches per actor (fresh output folders). Throughput is measured two ways:
- steady state (primary): rows per second between the moments 10% and 90% of the variant's rows
  were written (part file times), leaving out actor start-up, which is staggered over nodes;
- amortised: rows over the variant's wall time (first actor ready to last row written).
Efficiency = rate(8 actors) / (8 x rate(1 actor)); the JSON line carries the steady-state figure
(target >= 0.90). The (node, GPU) pairs the actors saw are printed to show the placement.
"""

from __future__ import annotations

import os
import tempfile
import time

import pandas as pd
import ray
from _docs import experiment, fake_variant, report, steady_rate, temp_dir, timed_run, tiny_dataset, use_temp_cache
from ray.cluster_utils import Cluster

BATCH, DELAY_S, BATCHES_PER_ACTOR = 4, 0.5, 24
NODES, GPUS_PER_NODE = 4, 2


def start_cluster() -> tuple[Cluster, float]:
    # Cluster writes its address to <ray temp dir>/ray_current_cluster, where any plain ray.init() on
    # this machine would then connect, and deletes that file on shutdown: keep it in a private folder.
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ilab-", dir="/tmp")
    start = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False})
    for _ in range(NODES):
        cluster.add_node(num_cpus=2, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    return cluster, time.perf_counter() - start


def rates(actors: int, data: str) -> tuple[float, float]:
    root = temp_dir(f"scaling{actors}")
    exp = experiment("scaling", root, {"source": "folder", "path": data, "limit": actors * BATCH * BATCHES_PER_ACTOR},
                     [fake_variant("v", DELAY_S, batch_size=BATCH, num_cpus=0.5, actors=actors, num_gpus=1)])
    result, wall = timed_run(exp)
    t = result.summary["timings"]["v"]
    amortised, steady = t["rows"] / t["wall_s"], steady_rate(result.results, "v")
    df = pd.read_parquet(result.results, columns=["node_id", "gpu_ids", "worker"])
    where = sorted({(n[:8], ",".join(g)) for n, g in zip(df["node_id"], df["gpu_ids"])})
    print(f"{actors} actor(s): {t['rows']} rows, variant wall {t['wall_s']:.2f} s -> amortised {amortised:.2f} docs/s, "
          f"steady {steady:.2f} docs/s (ideal {actors * BATCH / DELAY_S:.1f}); run_experiment {wall:.1f} s")
    print(f"  {len(where)} distinct (node, GPU) pairs over {len({n for n, _ in where})} nodes: {where}")
    return amortised, steady


def main() -> None:
    use_temp_cache()
    data = str(tiny_dataset(temp_dir("scaling-data"), NODES * GPUS_PER_NODE * BATCH * BATCHES_PER_ACTOR))
    cluster, startup = start_cluster()
    print(f"cluster start-up ({NODES} nodes x {GPUS_PER_NODE} GPUs + head): {startup:.1f} s (excluded)")
    try:
        timed_run(experiment("warm-up", temp_dir("scaling-warm"), {"source": "folder", "path": data, "limit": 32},
                             [fake_variant("v", 0.0, batch_size=BATCH, num_cpus=0.5, actors=8, num_gpus=1)]))
        one_a, one_s = rates(1, data)
        eight_a, eight_s = rates(NODES * GPUS_PER_NODE, data)
    finally:
        ray.shutdown()
        cluster.shutdown()
    eff_a, eff_s = eight_a / (8 * one_a), eight_s / (8 * one_s)
    print(f"efficiency at 8 GPUs: steady state {eff_s:.3f}, amortised over {BATCHES_PER_ACTOR} batches "
          f"per actor {eff_a:.3f}  (batch {BATCH}, {DELAY_S} s per batch)")
    report("scaling", "efficiency_8_gpus_steady_state", eff_s, ">= 0.90", eff_s >= 0.90)


if __name__ == "__main__":
    main()
