"""One variant with 2 actors against the same variant with 1 actor: does a pool use its actors?

The fake backend sleeps a fixed ``DELAY_S`` per batch (no CPU), each actor reserves half a CPU,
so two actors fit beside the page stage on a 2-CPU local cluster. Throughput is the variant's
result rows over its wall time (first actor ready to last row written), in one run of each pool
size on fresh output folders, after a small warm-up run
(excluded) so both start from warm worker processes. Prints both and, last, one JSON line with 2-actor/1-actor
(target >= 1.8). Cluster start-up is printed apart.
"""

from __future__ import annotations

from _docs import experiment, fake_variant, report, start_ray, temp_dir, timed_run, tiny_dataset, use_temp_cache

N_DOCS, BATCH, DELAY_S = 96, 2, 0.5


def docs_per_s(actors: int, data: str) -> float:
    root = temp_dir(f"pool{actors}")
    exp = experiment("pool", root, {"source": "folder", "path": data},
                     [fake_variant("v", DELAY_S, batch_size=BATCH, num_cpus=0.5, actors=actors)])
    result, wall = timed_run(exp)
    t = result.summary["timings"]["v"]
    rate = t["rows"] / t["wall_s"]
    print(f"{actors} actor(s): {t['rows']} rows in {t['wall_s']:.2f} s variant wall -> {rate:.2f} docs/s "
          f"(run_experiment {wall:.1f} s; ideal {actors * BATCH / DELAY_S:.1f} docs/s)")
    return rate


def main() -> None:
    use_temp_cache()
    data = str(tiny_dataset(temp_dir("pool-data"), N_DOCS))
    print(f"ray start-up: {start_ray(num_cpus=2):.1f} s (excluded)")
    timed_run(experiment("warm-up", temp_dir("pool-warm"), {"source": "folder", "path": data, "limit": 8},
                         [fake_variant("v", 0.0, batch_size=BATCH, num_cpus=0.5, actors=2)]))  # workers' imports
    one = docs_per_s(1, data)
    two = docs_per_s(2, data)
    ratio = two / one
    print(f"2 actors / 1 actor: {ratio:.3f}  ({N_DOCS} docs, batch {BATCH}, {DELAY_S} s per batch)")
    report("pool", "docs_per_s_2_actors_over_1", ratio, ">= 1.8", ratio >= 1.8)


if __name__ == "__main__":
    main()
