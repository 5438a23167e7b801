"""Shared inputs for the benchmarks: OCR text of a few synthetic invoices (cached), and the fields."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FIELDS = {
    "invoice_number": {"type": "id"},
    "invoice_date": {"type": "date", "day_first": True},
    "vendor_name": {"type": "text", "match": "fuzzy"},
    "total": {"type": "amount"},
}


def ocr_texts(n: int, seed: int = 7) -> list[str]:
    """OCR text of ``n`` synthetic invoices, as the page stage would produce it."""
    from invoicelab.backends.ocr import page_text
    from invoicelab.data.synthetic import generate

    folder = Path(tempfile.mkdtemp(prefix="invoicelab-bench-"))
    generate(folder, n=n, seed=seed)
    images = sorted((folder / "images").glob("*.jpg"))
    return [page_text(p, engine="rapidocr", num_threads=os.cpu_count()) for p in images]


# --- helpers of the orchestrator benchmarks (pool, scaling, concurrency, memory, cache, overhead) ---


def temp_dir(prefix: str) -> Path:
    """A fresh temporary folder (left in place: a benchmark's output can be inspected afterwards)."""
    return Path(tempfile.mkdtemp(prefix=f"invoicelab-{prefix}-"))


def use_temp_cache() -> Path:
    """Point INVOICELAB_CACHE at a fresh folder, before Ray starts (its workers inherit it)."""
    folder = temp_dir("cache")
    os.environ["INVOICELAB_CACHE"] = str(folder)
    return folder


def tiny_dataset(folder: Path, n: int) -> Path:
    """A folder dataset of ``n`` distinct 8x8 PNG files (about 100 bytes each) and its gt.jsonl.

    For the fake backend (OCR engine ``none``): each page is loaded and checked, nothing more, so
    thousands of documents cost little to write and to read.
    """
    import io
    import json

    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image = Image.new("L", (8, 8), color=i % 251)
        image.putpixel((i % 8, (i // 8) % 8), 255)
        buffer = io.BytesIO()
        image.save(buffer, "PNG", pnginfo=_png_text(f"doc-{i}"))
        (folder / "img" / f"d{i:06d}.png").write_bytes(buffer.getvalue())
        fields = {"invoice_number": f"INV-{i:06d}", "invoice_date": "03/04/2024", "vendor_name": "Acme Ltd",
                  "total": f"{100 + i % 900}.50"}
        lines.append(json.dumps({"doc_id": f"d{i:06d}", "file": f"img/d{i:06d}.png", "fields": fields}) + "\n")
    (folder / "gt.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


def _png_text(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("id", text)  # makes every file's bytes (and content hash) distinct
    return info


def fake_variant(name: str, delay_s: float, batch_size: int = 4, num_cpus: float = 0.5, actors: int = 1,
                 num_gpus: float = 0.0) -> dict:
    """A fixed-latency fake variant: ``delay_s`` seconds of sleep per batch, holding its reservation."""
    return {"name": name, "backend": "fake", "batch_size": batch_size, "options": {"delay_s": delay_s},
            "resources": {"num_cpus": num_cpus, "num_gpus": num_gpus, "actors": actors}}


def experiment(name: str, root: Path, dataset: dict, variants: list[dict], **extra):
    """An experiment writing into ``root/<name>`` with ``root`` as its only store (nothing to reuse)."""
    from invoicelab.config import parse_experiment

    return parse_experiment({"name": name, "dataset": dataset, "fields": FIELDS, "variants": variants,
                             "output_dir": str(root / name), "store": str(root), **extra})


def timed_run(exp):
    """``run_experiment(exp)`` and its wall time in seconds."""
    import time

    from invoicelab.orchestrator.pipeline import run_experiment

    start = time.perf_counter()
    result = run_experiment(exp)
    return result, time.perf_counter() - start


def start_ray(**kwargs) -> float:
    """Start a new local Ray cluster (quiet, never joining one already running here); its start-up time in s."""
    import logging
    import time

    import ray

    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, **kwargs)
    return time.perf_counter() - start


def report(benchmark: str, metric: str, value: float, target: str, met: bool) -> None:
    """The benchmark's last line: one JSON object."""
    import json

    print(json.dumps({"benchmark": benchmark, "metric": metric, "value": float(f"{value:.4g}"), "target": target,
                      "met": bool(met)}))


def steady_rate(results: Path, prefix: str, trim: float = 0.1) -> float:
    """Rows per second of one variant in its steady state, from the times its parts were written.

    Each finished batch is one Parquet part; the rate is the rows completed between the moments
    ``trim`` and ``1 - trim`` of the variant's rows were written, over that interval, so actor
    start-up (staggered over nodes) and the last, partly idle batches are left out.
    """
    import pyarrow.parquet as pq

    parts = sorted((p.stat().st_mtime_ns, pq.read_metadata(p).num_rows) for p in Path(results).glob(f"{prefix}-*.parquet"))
    total = sum(n for _, n in parts)
    done, marks = 0, []
    for mtime, rows in parts:
        done += rows
        marks.append((mtime / 1e9, done))
    lo = next(m for m in marks if m[1] >= trim * total)
    hi = next(m for m in marks if m[1] >= (1 - trim) * total)
    return (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")
