"""Four variants with dedicated resources run together against the slowest of them run alone.

Fake variants sleep 0.2, 0.3, 0.4 and 0.5 s per batch of 4 documents, each actor reserving a
quarter CPU, so all four fit beside the page stage on a 2-CPU local cluster and should run side
by side: together they should take about as long as the slowest alone. The ratio is the wall time
of ``run_experiment`` (planning, page stage and summary included on both sides) together / alone,
summed over ``REPEATS`` alternated pairs of runs, after a warm-up run (excluded); the same ratio of
the slowest variant's own wall time (first actor ready to last row written) is printed too. 320
documents (the slowest alone about 40 s) so that actor start-up, which four actors pay at once on
few cores, is amortised as in a real run. Last line: one JSON line (target <= 1.15).
"""

from __future__ import annotations

from _docs import experiment, fake_variant, report, start_ray, temp_dir, timed_run, tiny_dataset, use_temp_cache

N_DOCS, BATCH, DELAYS, REPEATS = 320, 4, (0.2, 0.3, 0.4, 0.5), 1


def variants(delays, names=None) -> list[dict]:
    names = names or [f"v{d:g}s" for d in delays]
    return [fake_variant(n, d, batch_size=BATCH, num_cpus=0.25) for n, d in zip(names, delays)]


def run(label: str, data: str, delays) -> tuple[float, dict]:
    result, wall = timed_run(experiment(label, temp_dir(label), {"source": "folder", "path": data}, variants(delays)))
    timings = {k: v for k, v in result.summary["timings"].items() if not k.startswith("pages")}
    shown = ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in timings.items())
    print(f"{label}: run_experiment {wall:.1f} s; variant wall: {shown}")
    return wall, timings


def main() -> None:
    use_temp_cache()
    data = str(tiny_dataset(temp_dir("concurrency-data"), N_DOCS))
    print(f"ray start-up: {start_ray(num_cpus=2):.1f} s (excluded)")
    # Warm-up: workers' imports, and the documents' content hashes (cached) that both runs then share.
    timed_run(experiment("warm-up", temp_dir("conc-warm"), {"source": "folder", "path": data},
                         variants([0.0] * 4, ["a", "b", "c", "d"])))
    slowest, name = max(DELAYS), f"v{max(DELAYS):g}s"
    alone = together = alone_v = together_v = 0.0
    for i in range(REPEATS):  # alternated, so that the machine's other load falls on both sides alike
        wall, t = run(f"alone-{i}", data, [slowest])
        alone, alone_v = alone + wall, alone_v + t[name]["wall_s"]
        wall, t = run(f"together-{i}", data, DELAYS)
        together, together_v = together + wall, together_v + t[name]["wall_s"]
    ratio = together / alone
    print(f"together / slowest alone, over {REPEATS} alternated pairs: {ratio:.3f} (run_experiment wall); "
          f"{together_v / alone_v:.3f} for the slowest variant's own wall ({N_DOCS} docs, batch {BATCH})")
    report("concurrency", "wall_4_together_over_slowest_alone", ratio, "<= 1.15", ratio <= 1.15)


if __name__ == "__main__":
    main()
