"""How one page stream feeds four concurrent variant pools: invoicelab's own pools (A) against Ray Data.

Same workload for every alternative: synthetic invoices generated once into a temporary folder,
a page stage of one actor (1 CPU, OCR engine "none": each worker reads and decodes each image,
sha256 included), and four fake variants sleeping 0.2, 0.3, 0.4 and 0.5 s per batch of 4
documents, one actor of 0.25 CPU each, so everything fits at once on a 2-CPU local cluster.

- A: ``invoicelab.orchestrator.pipeline.run_experiment`` (its own pools over Ray core actors, page
  batches routed as object refs to every variant pool, results written by a writer actor). It also
  hashes the documents and plans against the result store first: that is in its wall time.
- B: Ray Data, one pipeline whose stages are the variants (read -> pages -> v1 -> ... -> v4); each
  variant writes its result part itself and passes the page columns on; the driver only iterates.
- C: Ray Data, the page dataset materialised in the object store, then one pipeline per variant
  run concurrently from driver threads (each variant writes its parts itself).
- D: the old skeleton's shape: pages collected on the driver (``pa.concat_tables``), sent back with
  ``ray.data.from_arrow``, variants one after another, result batches written by the driver.

Per run: wall time (cluster start excluded), time until the first result part exists, the
driver's peak RSS growth (sampled by a thread), rows written. Each alternative runs ``--repeat``
times, interleaved; the ratio uses each one's best wall. Then a short fault run per alternative
(in its own process and cluster, so a hang can be killed): one document SIGKILLs the worker of one
variant; restarts and retries bounded where the alternative allows. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _docs import FIELDS, experiment, report, start_ray, temp_dir

DELAYS, BATCH, VARIANT_CPUS, PAGE_CPUS = (0.2, 0.3, 0.4, 0.5), 4, 0.25, 1.0
KILLED_VARIANT, KILLED_INDEX = 1, 5  # the 0.3 s variant; document 5 sits in the second batch (4..7)
HANG_S = 60.0
# Bounded Ray Data fault knobs used in the fault runs (Ray Data's own defaults: -1 = unlimited).
RD_MAX_RESTARTS, RD_MAX_TASK_RETRIES, RD_MAX_ERRORED_BLOCKS = 2, 2, 1


# --- the workload --------------------------------------------------------------------------------

def make_experiment(name: str, data: str, limit: int | None, kill_doc: str | None = None):
    variants = []
    for i, delay in enumerate(DELAYS):
        options = {"delay_s": delay}
        if kill_doc and i == KILLED_VARIANT:
            options["kill_on"] = [kill_doc]
        variants.append({"name": f"v{delay:g}s", "backend": "fake", "batch_size": BATCH, "options": options,
                         "resources": {"num_cpus": VARIANT_CPUS, "actors": 1},
                         "faults": {"max_restarts": 5, "max_retries": 1}})
    dataset = {"source": "folder", "path": data, **({"limit": limit} if limit else {})}
    return experiment(name, temp_dir(f"dp-{name}"), dataset, variants,
                      page_stage={"num_cpus": PAGE_CPUS, "actors": 1})


def write_part(folder: str, table: pa.Table, prefix: str) -> None:
    """An atomic Parquet part (hidden temporary file, then rename), as invoicelab's store writes them."""
    os.makedirs(folder, exist_ok=True)
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    tmp = os.path.join(folder, f".{name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(folder, f"{name}.parquet"))


class VariantFn:
    """A Ray Data stage of one variant, wrapping ``Extractor`` as invoicelab's ``VariantActor`` does.

    mode "pass": write the result part here, return the page columns unchanged (B);
    "count": write the part here, return one small row per document (C); "rows": return the result rows (D).
    """

    def __init__(self, experiment_json: str, variant_name: str, prompts: dict, out_dir: str, mode: str):
        from invoicelab.actors.extractor import Extractor

        self.extractor = Extractor(experiment_json, variant_name, prompts=prompts)
        self.name, self.out_dir, self.mode = variant_name, out_dir, mode

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("doc_id").to_pylist()
        result = self.extractor(batch, [(d, "terse-json", f"{self.name}:{d}") for d in ids])
        if self.mode == "rows":
            return result
        write_part(self.out_dir, result, self.name)
        if self.mode == "pass":
            return batch
        return pa.table({"doc_id": ids, "variant": [self.name] * len(ids)})


def page_stage(rows: list[dict], exp, bounded: dict):
    import ray
    from ray.data import ActorPoolStrategy

    from invoicelab.actors.pages import PageReader, TextSetting
    from invoicelab.data.sources import cache_root

    d = exp.dataset
    setting = dataclasses.asdict(TextSetting("none", d.pdf_dpi, d.max_pages, d.max_pixels))
    ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / BATCH))
    return ds.map_batches(PageReader, fn_constructor_kwargs={"setting": setting, "cache_dir": str(cache_root())},
                          compute=ActorPoolStrategy(size=1), num_cpus=PAGE_CPUS, batch_size=BATCH,
                          batch_format="pyarrow", **bounded)


def variant_stage(ds, exp, variant, out_dir: str, mode: str, bounded: dict):
    from ray.data import ActorPoolStrategy

    from invoicelab.prompts import load_prompt

    prompts = {"terse-json": dataclasses.asdict(load_prompt("terse-json"))}
    return ds.map_batches(VariantFn, fn_constructor_args=(exp.model_dump_json(), variant.name, prompts, out_dir, mode),
                          compute=ActorPoolStrategy(size=1), num_cpus=VARIANT_CPUS, batch_size=BATCH,
                          batch_format="pyarrow", **bounded)


def doc_rows(exp) -> list[dict]:
    from invoicelab.data.sources import load_documents

    return [d.row() for d in load_documents(exp)]


def _drain(ds) -> None:
    for _ in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        pass


# --- the alternatives: each returns (results folder, failures by variant) -------------------------

def run_a(exp, out: str, bounded: dict) -> tuple[str, dict]:
    from invoicelab import store
    from invoicelab.orchestrator.pipeline import run_experiment

    result = run_experiment(exp)
    return str(store.results_dir(result.out_dir)), {}


def run_b(exp, out: str, bounded: dict) -> tuple[str, dict]:
    ds = page_stage(doc_rows(exp), exp, bounded)
    for v in exp.variants:
        ds = variant_stage(ds, exp, v, out, "pass", bounded)
    try:
        _drain(ds)
    except Exception as err:  # noqa: BLE001 - one pipeline: a failure is every variant's
        return out, {"all": _first_line(err)}
    return out, {}


def run_c(exp, out: str, bounded: dict) -> tuple[str, dict]:
    pages = page_stage(doc_rows(exp), exp, bounded).materialize()
    failures: dict[str, str] = {}

    def one(v) -> None:
        try:
            _drain(variant_stage(pages, exp, v, out, "count", bounded))
        except Exception as err:  # noqa: BLE001 - a variant's failure stays its own
            failures[v.name] = _first_line(err)

    threads = [threading.Thread(target=one, args=(v,), daemon=True) for v in exp.variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, failures


def run_d(exp, out: str, bounded: dict) -> tuple[str, dict]:
    import ray

    tables = list(page_stage(doc_rows(exp), exp, bounded).iter_batches(batch_size=None, batch_format="pyarrow"))
    pages = ray.data.from_arrow(pa.concat_tables(tables))
    failures: dict[str, str] = {}
    for v in exp.variants:
        try:
            for batch in variant_stage(pages, exp, v, out, "rows", bounded).iter_batches(batch_size=None,
                                                                                         batch_format="pyarrow"):
                write_part(out, batch, v.name)
        except Exception as err:  # noqa: BLE001 - as the skeleton did: the next variant still runs
            failures[v.name] = _first_line(err)
    return out, failures


ALTERNATIVES = {"A": run_a, "B": run_b, "C": run_c, "D": run_d}


def _first_line(err: Exception) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]


# --- measuring -------------------------------------------------------------------------------------

class Watch(threading.Thread):
    """Samples the driver's RSS and looks for the first result part under ``root``, every 20 ms."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.root = psutil.Process(), root
        self.start_t = time.perf_counter()
        self.base = self.peak = self.proc.memory_info().rss
        self.first: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            if self.first is None and any(self.root.rglob("*.parquet")):
                self.first = time.perf_counter() - self.start_t
            time.sleep(0.02)


def measure(alt: str, exp, bounded: dict | None = None, hang_s: float | None = None) -> dict:
    """Run one alternative in a thread (so a hang can be told apart) and measure it."""
    root = Path(exp.out_path).parent if alt == "A" else temp_dir(f"dp-{alt}")
    if alt == "A":  # a first run: no document hashes cached by an earlier one (read by the driver only)
        os.environ["INVOICELAB_CACHE"] = str(temp_dir("dp-cache"))
    out = str(root / "results")
    watch = Watch(root)
    box: dict = {}

    def target() -> None:
        try:
            box["folder"], box["failures"] = ALTERNATIVES[alt](exp, out, bounded or {})
        except Exception as err:  # noqa: BLE001
            box["folder"], box["failures"] = out, {"all": _first_line(err)}

    watch.start()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(hang_s)
    wall = time.perf_counter() - watch.start_t
    watch.stop.set()
    watch.join()
    rows = _read(Path(box.get("folder", out)))
    return {"alt": alt, "wall_s": round(wall, 2), "hung": worker.is_alive(),
            "first_row_s": None if watch.first is None else round(watch.first, 2),
            "rss_growth_mb": round((watch.peak - watch.base) / 2**20, 1), "rows": rows,
            "failures": box.get("failures", {})}


def _read(folder: Path) -> list[dict]:
    parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    tables = [pq.read_table(p, columns=["doc_id", "variant", "error"]) for p in parts]
    return pa.concat_tables(tables).to_pylist() if tables else []


# --- the fault run (one per process) ---------------------------------------------------------------

def fault_child(alt: str, data: str, docs: int) -> None:
    from ray.data import DataContext

    from invoicelab.data.sources import load_documents

    print(json.dumps({"start_s": round(start_ray(num_cpus=2), 1)}), flush=True)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = RD_MAX_ERRORED_BLOCKS
    probe = make_experiment("probe", data, docs)
    kill_doc = load_documents(probe)[KILLED_INDEX].doc_id
    exp = make_experiment(f"kill-{alt}", data, docs, kill_doc)
    bounded = {"max_restarts": RD_MAX_RESTARTS, "max_task_retries": RD_MAX_TASK_RETRIES}
    m = measure(alt, exp, bounded, hang_s=HANG_S)
    killed = exp.variants[KILLED_VARIANT].name
    ids = [d.doc_id for d in load_documents(exp)]
    mates = [d for d in ids[KILLED_INDEX // BATCH * BATCH:(KILLED_INDEX // BATCH + 1) * BATCH] if d != kill_doc]
    ok = {(r["doc_id"], r["variant"]) for r in m["rows"] if r["error"] is None}
    others = [v.name for v in exp.variants if v.name != killed]
    summary = {**{k: v for k, v in m.items() if k != "rows"},
               "kill_doc_error_row": any(r["doc_id"] == kill_doc and r["variant"] == killed and r["error"]
                                         for r in m["rows"]),
               "batch_mates_ok": sum((d, killed) in ok for d in mates), "batch_mates": len(mates),
               "killed_variant_ok": sum(1 for d in ids if (d, killed) in ok),
               "other_variants_ok": sum(1 for d in ids for v in others if (d, v) in ok),
               "expected": len(ids)}
    print("RESULT " + json.dumps(summary), flush=True)
    sys.stdout.flush()
    os._exit(0)  # a hung Ray Data execution must not keep this process alive


def fault_run(alt: str, data: str, docs: int) -> dict:
    cmd = [sys.executable, __file__, "--fault-child", alt, "--data", data, "--fault-docs", str(docs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, cwd=os.path.dirname(__file__))
    try:
        out, _ = proc.communicate(timeout=HANG_S + 120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        try:  # the child's own Ray processes (same session), if any are left
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    return json.loads(line[7:]) if line else {"alt": alt, "hung": True, "wall_s": None, "error": "no result"}


# --- main ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fault-docs", type=int, default=16)
    parser.add_argument("--fault-repeat", type=int, default=1)
    parser.add_argument("--only", default="ABCD")
    parser.add_argument("--fault-child")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.fault_child:
        return fault_child(args.fault_child, args.data, args.fault_docs)

    from invoicelab.data.synthetic import generate

    os.environ["INVOICELAB_CACHE"] = str(temp_dir("dp-cache"))  # before Ray starts: workers inherit it
    data = temp_dir("dp-data")
    generate(data, n=args.docs, seed=11)
    print(f"{args.docs} synthetic invoices in {data}; fields {list(FIELDS)}")
    print(f"ray start-up: {start_ray(num_cpus=2):.1f} s (excluded)")
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    for alt in args.only:  # warm-up (workers' imports, file cache), excluded
        measure(alt, make_experiment(f"warm-{alt}", str(data), 8))
    runs: dict[str, list[dict]] = {alt: [] for alt in args.only}
    for rep in range(args.repeat):
        for alt in args.only:
            m = measure(alt, make_experiment(f"{alt}{rep}", str(data), None))
            rows = m.pop("rows")
            m["rows"] = len(rows)
            m["error_rows"] = sum(1 for r in rows if r["error"])
            runs[alt].append(m)
            print(json.dumps(m), flush=True)
    import ray

    ray.shutdown()
    faults = {alt: [] for alt in args.only}
    for rep in range(args.fault_repeat):
        for alt in args.only:
            f = fault_run(alt, str(data), args.fault_docs)
            faults[alt].append(f)
            print("fault " + json.dumps(f), flush=True)

    expected = args.docs * len(DELAYS)
    print(f"\n{args.docs} docs x {len(DELAYS)} variants ({expected} rows), batch {BATCH}, delays {DELAYS} s; "
          f"runs {args.repeat}x each, interleaved")
    print(f"{'alt':<4}{'wall s (runs)':<16}{'first row s':<14}{'RSS +MB':<12}{'rows':<9}"
          f"{'fault: ended (failed variants) / wall s / batch-mates ok / other variants ok'}")
    for alt in args.only:
        r, fs = runs[alt], faults[alt]
        walls = "/".join(f"{m['wall_s']:.1f}" for m in r)
        firsts = "/".join("-" if m["first_row_s"] is None else f"{m['first_row_s']:.1f}" for m in r)
        rss = "/".join(f"{m['rss_growth_mb']:.0f}" for m in r)
        rows = "/".join(str(m["rows"]) for m in r)
        fault = "; ".join(
            f"{'hang' if f.get('hung') else 'ended'}{' (failed: ' + ','.join(f['failures']) + ')' if f.get('failures') else ''} / {f.get('wall_s')} / {f.get('batch_mates_ok')}/"
            f"{f.get('batch_mates')} / {f.get('other_variants_ok')}/{3 * f.get('expected', 0)}" for f in fs)
        print(f"{alt:<4}{walls:<16}{firsts:<14}{rss:<12}{rows:<9}{fault}")
    if "A" in runs and len(runs) > 1:
        best = {alt: min(m["wall_s"] for m in r) for alt, r in runs.items()}
        other = min(v for k, v in best.items() if k != "A")
        ratio = best["A"] / other
        print(f"A best wall {best['A']:.2f} s / best other {other:.2f} s = {ratio:.3f}")
        report("data_path", "A_wall_over_best_other_wall", ratio, "<= 1.05", ratio <= 1.05)


if __name__ == "__main__":
    main()
