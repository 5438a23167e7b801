"""The memory estimate (``invoicelab.memory``) against the measured footprint, for every CPU precision.

For each precision, a fresh Python process imports torch and transformers, reads its resident set
(``VmRSS`` in ``/proc/self/status``: the baseline, libraries loaded, no model), loads the bundled
SmolLM2-135M-Instruct through ``TextLLM`` (the backends' own loading path), and generates for a
batch of BATCH prompts of PROMPT_TOKENS tokens each, exactly NEW_TOKENS new tokens per row
(``min_new_tokens``, so that no row stops early and the KV cache reaches its full length), greedy,
with THREADS torch threads. The peak resident set (``VmHWM``) is reset (``/proc/self/clear_refs``)
after the baseline and read after loading and after generating:

    measured footprint = max(peak while loading, peak while generating) - baseline

which is what the process needs beyond its libraries: the weights (with, for precisions quantized
after loading, their float32 load), the KV cache, activations, and torch's own workspace. The
estimate is ``invoicelab.memory.estimate`` for the same model config, precision, batch and lengths.
Its one calibrated constant, ``RUNTIME_OVERHEAD_BYTES`` (tokenizer, generation state, allocator and
kernel workspaces), is documented where it is defined. The error is (estimate - measured) / measured.

The last line is JSON: value = the largest |error| over the precisions that load (target <= 0.20).
A precision that fails to load here is printed with its reason and left out of the value.

    python benchmarks/memory_estimate.py [--precisions fp32,bf16] [--batch 8] [--prompt 400] [--new 64]
    python benchmarks/memory_estimate.py --offload   # the speed cost of disk offloading (see RESULTS.md)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invoicelab.memory import estimate  # noqa: E402
from invoicelab.variants import PRECISIONS  # noqa: E402

MODEL = "smollm2-135m-instruct"
BATCH, PROMPT_TOKENS, NEW_TOKENS, THREADS = 8, 400, 32, 2
MB = 1e6


def status_kb(key: str) -> int:
    """A ``/proc/self/status`` value in kB (VmRSS, VmHWM)."""
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def prompts(tokenizer, batch: int, length: int) -> list[str]:
    """``batch`` invoice-like texts of exactly ``length`` tokens each (so nothing is padded)."""
    out = []
    for i in range(batch):
        lines = [f"INVOICE No. INV-{1000 + i * 37 + k} date {1 + k % 28:02d}/0{1 + i % 9}/2024 item {k} "
                 f"widget model {k * 13 % 97} qty {k % 5 + 1} price {k * 7.25 + i:.2f} EUR" for k in range(80)]
        ids = tokenizer("\n".join(lines), add_special_tokens=False)["input_ids"][:length]
        assert len(ids) == length, len(ids)
        out.append(tokenizer.decode(ids))
    return out


def worker(precision: str, batch: int, length: int, new: int, offload_gb: float | None) -> dict:
    """Run in a fresh process: load, generate, measure (see the module docstring)."""
    import torch
    import transformers  # noqa: F401

    from invoicelab.backends.hf import TextLLM

    torch.set_num_threads(THREADS)
    base = status_kb("VmRSS") * 1024
    reset_peak()
    start = time.perf_counter()
    offload = {"device_gb": offload_gb} if offload_gb else None
    llm = TextLLM(MODEL, precision=precision, num_threads=THREADS, device="cpu", offload=offload)
    load_s, load_peak = time.perf_counter() - start, status_kb("VmHWM") * 1024
    tok = llm.tokenizer
    enc = tok(prompts(tok, batch, length), return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc["input_ids"].shape == (batch, length)
    reset_peak()
    start = time.perf_counter()
    with torch.inference_mode():
        out = llm.model.generate(**enc.to(llm.device), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
    gen_s, gen_peak = time.perf_counter() - start, status_kb("VmHWM") * 1024
    texts = tok.batch_decode(out[:, length:], skip_special_tokens=True)
    info = llm.info()
    return {"precision": precision, "base": base, "load_peak": load_peak - base, "gen_peak": gen_peak - base,
            "measured": max(load_peak, gen_peak) - base, "load_s": load_s, "gen_s": gen_s,
            "model_bytes": info["memory_footprint_bytes"], "placement": info.get("placement"), "texts": texts}


def run_worker(precision: str, args: argparse.Namespace, offload_gb: float | None = None) -> dict:
    """One fresh process per measurement; a failure comes back as {"error": ...}."""
    cmd = [sys.executable, __file__, "--worker", precision, "--batch", str(args.batch), "--prompt",
           str(args.prompt), "--new", str(args.new)] + (["--offload-gb", str(offload_gb)] if offload_gb else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"precision": precision, "error": tail}
    return json.loads(lines[-1])


def compare(args: argparse.Namespace) -> None:
    from invoicelab.backends.placement import model_config

    config = model_config(MODEL)
    chosen = args.precisions.split(",") if args.precisions else list(PRECISIONS)
    print(f"{MODEL}: batch {args.batch}, {args.prompt}-token prompts, {args.new} new tokens, {THREADS} threads; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'precision':<18}{'weights':>9}{'kv':>7}{'act':>7}{'over':>7}{'ckpt':>7}{'load':>7}{'estimate':>10}"
          f"{'measured':>10}{'(load':>8}{'gen)':>7}{'error':>8}{'gen s':>7}")
    errors, by_precision = [], {}
    for precision in chosen:
        m = run_worker(precision, args)
        if "error" in m:
            print(f"{precision:<18} does not load here: {m['error']}")
            continue
        e = estimate(config, precision, batch=args.batch, prompt_tokens=args.prompt, new_tokens=args.new)
        err = (e.total - m["measured"]) / m["measured"]
        errors.append(abs(err))
        by_precision[precision] = round(err, 4)
        print(f"{precision:<18}{e.weights / MB:>9.0f}{e.kv_cache / MB:>7.0f}{e.activations / MB:>7.0f}"
              f"{e.overhead / MB:>7.0f}{e.checkpoint / MB:>7.0f}{e.load_transient / MB:>7.0f}{e.total / MB:>10.0f}{m['measured'] / MB:>10.0f}"
              f"{m['load_peak'] / MB:>8.0f}{m['gen_peak'] / MB:>7.0f}{err:>+8.1%}{m['gen_s']:>7.1f}")
    print(f"(MB = 1e6 bytes; ckpt: float checkpoint kept resident; load: memory taken only while loading, see "
          f"invoicelab.memory.Estimate; load average now "
          f"{os.getloadavg()[0]:.2f}: other work shares the cores, which moves the seconds, not the bytes)")
    worst = max(errors) if errors else float("nan")
    print(json.dumps({"benchmark": "memory_estimate", "metric": "worst_abs_error", "value": round(worst, 4),
                      "target": "<= 0.20", "met": bool(errors) and worst <= 0.20, "errors": by_precision}))


def offload_cost(args: argparse.Namespace) -> None:
    """Seconds per generate at fp32 with the whole model in memory, and with device_gb small (rest on disk)."""
    plain = run_worker("fp32", args)
    disk = run_worker("fp32", args, offload_gb=args.offload_gb)
    same = plain["texts"] == disk["texts"]
    print(f"fp32, batch {args.batch}, {args.prompt}-token prompts, {args.new} new tokens:")
    print(f"  in memory: generate {plain['gen_s']:.1f} s, load {plain['load_s']:.1f} s, footprint "
          f"{plain['measured'] / MB:.0f} MB")
    print(f"  offload device_gb={args.offload_gb}: generate {disk['gen_s']:.1f} s, load {disk['load_s']:.1f} s, "
          f"footprint {disk['measured'] / MB:.0f} MB; placement {disk['placement']}")
    print(f"  slowdown x{disk['gen_s'] / plain['gen_s']:.2f}; same answers: {same}")
    print(json.dumps({"benchmark": "offload", "metric": "generate_seconds_ratio_disk_vs_memory",
                      "value": round(disk["gen_s"] / plain["gen_s"], 3), "target": "same answers", "met": same}))


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--prompt", type=int, default=PROMPT_TOKENS)
    parser.add_argument("--new", type=int, default=NEW_TOKENS)
    parser.add_argument("--offload", action="store_true", help="measure the speed cost of offloading instead")
    parser.add_argument("--offload-gb", type=float, default=0.1)
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        offload_gb = args.offload_gb if "--offload-gb" in sys.argv else None
        print(json.dumps(worker(args.worker, args.batch, args.prompt, args.new, offload_gb)))
    elif args.offload:
        offload_cost(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
