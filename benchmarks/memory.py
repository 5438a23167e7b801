"""Driver memory from 1,000 to 20,000 documents: does the driver hold only ids and counters?

A folder dataset of tiny PNG files (written here; the fake backend, OCR engine ``none``, so every
page is still loaded and checked by the page stage) is run twice on fresh output folders: its
first 1,000 documents, then all 20,000. A thread samples the driver process's RSS (psutil) every
20 ms during ``run_experiment``; a run's growth is its peak minus the RSS just before it. The
value is growth(20,000) - growth(1,000), in MB (target <= 50). A small warm-up run comes first
(excluded), so one-time imports and caches are in both baselines.
"""

from __future__ import annotations

import gc
import threading
import time

import psutil
from _docs import experiment, fake_variant, report, start_ray, temp_dir, timed_run, tiny_dataset, use_temp_cache

SIZES, BATCH = (1_000, 20_000), 64
MB = 1e6


class PeakRss:
    """Samples this process's resident set size in a thread; ``peak`` is the largest seen."""

    def __init__(self, every_s: float = 0.02):
        self.proc, self.every_s, self.peak = psutil.Process(), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def growth(n: int, data: str) -> float:
    exp = experiment(f"memory-{n}", temp_dir(f"memory{n}"), {"source": "folder", "path": data, "limit": n},
                     [fake_variant("v", 0.0, batch_size=BATCH, num_cpus=0.5)])
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    with PeakRss() as rss:
        result, wall = timed_run(exp)
    rows = result.summary["timings"]["v"]["rows"]
    print(f"{n:>6} documents: {rows} rows in {wall:.1f} s; driver RSS {baseline / MB:.0f} MB before, "
          f"peak {rss.peak / MB:.0f} MB -> growth {(rss.peak - baseline) / MB:.1f} MB")
    return (rss.peak - baseline) / MB


def main() -> None:
    use_temp_cache()
    start = time.perf_counter()
    data = str(tiny_dataset(temp_dir("memory-data"), max(SIZES)))
    print(f"wrote {max(SIZES)} tiny PNG documents in {time.perf_counter() - start:.1f} s")
    print(f"ray start-up: {start_ray(num_cpus=2):.1f} s (excluded)")
    timed_run(experiment("warm-up", temp_dir("memory-warm"), {"source": "folder", "path": data, "limit": 200},
                         [fake_variant("v", 0.0, batch_size=BATCH, num_cpus=0.5)]))
    small, large = (growth(n, data) for n in SIZES)
    extra = large - small
    print(f"driver RSS growth, {SIZES[1]} vs {SIZES[0]} documents: {extra:+.1f} MB")
    report("memory", "driver_rss_growth_mb_20000_minus_1000_docs", extra, "<= 50", extra <= 50)


if __name__ == "__main__":
    main()
