"""bf16 vs bnb-int8 vs bnb-nf4 (transformers, loaded by invoicelab) and vLLM where installed, on one GPU.

The model is random-initialised at a real size: Qwen2.5-1.5B's shape (28 layers, hidden 1536, vocab
151,936), from a config written below (no download; the device machine reaches no hub). Random weights
cost the same compute as trained ones for a fixed number of generated tokens, so every call generates
exactly NEW tokens (``min_new_tokens`` = ``max_new_tokens``) after PROMPT random token ids; the folder
holds no tokenizer, so prompts are token ids.

Per precision: load time (``invoicelab.backends.precision.load_model``: ``from_pretrained`` of the
saved bf16 folder, quantizing on load), weights memory (``get_memory_footprint``), and per batch size
the median latency of one ``generate`` call, tokens/s (batch x NEW / latency) and the call's peak
``torch.cuda.max_memory_allocated``; ratios vs bf16 from the same run. vLLM (if importable; not on
the lent H200, where it cannot be installed): the same folder, eager mode, token-id prompts,
``ignore_eos``; its memory is what the card has in use (vLLM reserves ``gpu_memory_utilization`` of it
for the KV cache by design, in its engine process). bitsandbytes is pip-installed at the start if
missing (``--no-install``: skip bnb instead).

Runs in under 8 minutes on an H200 (``--budget-s`` skips what would not fit). ``--dry-run`` (also what
it does where torch sees no GPU): a tiny config, 2 new tokens, on CPU, to check the script end to end.
Prints a table and ends with one JSON line: nf4 weights memory / bf16's (target <= 0.45; a dry run
says so in the line, its tiny model's figures are not the benchmark's).

    python benchmarks/gpu_backends.py [--dry-run] [--out results.json] [--no-install] [--budget-s 450]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the repo's invoicelab, installed or not
QWEN2_5_1_5B = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536,
                "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645}
TINY = {**QWEN2_5_1_5B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512,
        "bos_token_id": 1, "eos_token_id": 2}
FULL = {"config": QWEN2_5_1_5B, "prompt": 256, "new": 64, "batches": (1, 16), "repeats": 2}
DRY = {"config": TINY, "prompt": 16, "new": 2, "batches": (1, 2), "repeats": 1}
PRECISIONS = ("bf16", "bnb-int8", "bnb-nf4")
MB = 2**20


class PlainLoader:
    """transformers' own loading, with the arguments ``precision.load_model`` passes: only where invoicelab
    cannot be imported (its config needs pydantic; ``gpu_run.sh`` carries it to the device machine)."""

    @staticmethod
    def load_model(path: str, precision: str, device: str) -> Any:
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        kwargs: dict[str, Any] = {"device_map": {"": device}}
        if precision == "bf16":
            kwargs["dtype"] = torch.bfloat16
        elif precision == "bnb-int8":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
        return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()

    @staticmethod
    def check_loaded(model: Any, precision: str) -> None:
        pass

    @staticmethod
    def memory_footprint(model: Any, precision: str) -> int:
        return int(model.get_memory_footprint())

    quiet_bnb_cast_log = staticmethod(contextlib.nullcontext)


def precision_module() -> Any:
    """``invoicelab.backends.precision`` (loading at a precision, checking it really has it), else ``PlainLoader``."""
    try:
        from invoicelab.backends import precision
        return precision
    except ImportError as err:
        print(f"note: invoicelab does not import here ({err}); loading with transformers directly")
        return PlainLoader


def ensure_bitsandbytes(install: bool) -> str | None:
    """Why bnb-* cannot run here, or None when bitsandbytes imports (pip-installed first if allowed)."""
    if importlib.util.find_spec("bitsandbytes") is None and install:
        print("bitsandbytes is missing: pip install 'bitsandbytes>=0.50' ...")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "bitsandbytes>=0.50"],
                              capture_output=True, text=True, timeout=180, check=False)
        if proc.returncode:
            return f"bitsandbytes could not be installed: {proc.stderr.strip().splitlines()[-1:]}"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # noqa: BLE001 - an import that fails for any reason means: skip bnb
        return f"bitsandbytes does not import: {err}"
    return None


def build_model(config: dict[str, Any], folder: Path, device: str) -> float:
    """Random-initialise the model (on the device, in bf16) and save it as a checkpoint; returns seconds."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    start = time.perf_counter()
    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(str(folder))
    del model
    free(device)
    return time.perf_counter() - start


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def token_ids(batch: int, length: int, vocab: int) -> Any:
    import torch

    return torch.randint(3, vocab - 1, (batch, length), generator=torch.Generator().manual_seed(batch))


def timed_generate(model: Any, ids: Any, new: int, device: str) -> tuple[float, int | None]:
    """One ``generate`` call of exactly ``new`` tokens per row: (seconds, peak bytes allocated or None)."""
    import torch

    ids = ids.to(model.device)
    mask = torch.ones_like(ids)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + new, out.shape
    return seconds, (torch.cuda.max_memory_allocated() if device == "cuda" else None)


def measure_transformers(precision: str, folder: Path, plan: dict[str, Any], device: str, prec: Any) -> dict:
    """Load at ``precision``, then time each batch size (one warm-up call first)."""
    import torch

    free(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = prec.load_model(str(folder), precision, device)
    prec.check_loaded(model, precision)
    load_s = time.perf_counter() - start
    result = {"backend": "transformers", "precision": precision, "load_s": load_s,
              "weights_bytes": prec.memory_footprint(model, precision), "batches": {}}
    vocab = plan["config"]["vocab_size"]
    with prec.quiet_bnb_cast_log():
        for batch in plan["batches"]:
            ids = token_ids(batch, plan["prompt"], vocab)
            timed_generate(model, ids, min(4, plan["new"]), device)  # warm-up: kernels, allocator, bnb state
            runs = [timed_generate(model, ids, plan["new"], device) for _ in range(plan["repeats"])]
            latency = statistics.median(s for s, _ in runs)
            peaks = [p for _, p in runs if p is not None]
            result["batches"][batch] = {"latency_s": latency, "tokens_per_s": batch * plan["new"] / latency,
                                        "peak_bytes": max(peaks) if peaks else None}
    del model
    free(device)
    return result


def measure_vllm(folder: Path, plan: dict[str, Any], quantization: str | None) -> dict:
    """vLLM on the same folder: eager mode, token-id prompts, exactly ``new`` tokens per prompt."""
    import torch
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=str(folder), skip_tokenizer_init=True, dtype="bfloat16", enforce_eager=True, seed=0,
              gpu_memory_utilization=0.5, max_model_len=plan["prompt"] + plan["new"] + 16,
              quantization=quantization)
    load_s = time.perf_counter() - start
    free_bytes, total = torch.cuda.mem_get_info()
    params = SamplingParams(max_tokens=plan["new"], min_tokens=plan["new"], ignore_eos=True, temperature=0.0,
                            detokenize=False)
    result = {"backend": "vllm", "precision": quantization or "bf16", "load_s": load_s,
              "gpu_used_bytes": total - free_bytes, "batches": {}}
    for batch in plan["batches"]:
        prompts = [{"prompt_token_ids": row.tolist()} for row in token_ids(batch, plan["prompt"],
                                                                            plan["config"]["vocab_size"])]
        llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up
        times = []
        for _ in range(plan["repeats"]):
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            times.append(time.perf_counter() - t0)
            assert all(len(o.outputs[0].token_ids) == plan["new"] for o in outs)
        latency = statistics.median(times)
        result["batches"][batch] = {"latency_s": latency, "tokens_per_s": batch * plan["new"] / latency,
                                    "peak_bytes": None}
    del llm
    free("cuda")
    return result


def with_ratios(results: list[dict]) -> list[dict]:
    """Add each result's ratios to the transformers bf16 result of the same run."""
    base = next((r for r in results if r["backend"] == "transformers" and r["precision"] == "bf16"), None)
    if base is None:
        return results
    for r in results:
        r["load_ratio"] = r["load_s"] / base["load_s"]
        if "weights_bytes" in r:
            r["weights_ratio"] = r["weights_bytes"] / base["weights_bytes"]
        for batch, m in r["batches"].items():
            b = base["batches"].get(batch)
            if b:
                m["tokens_per_s_ratio"] = m["tokens_per_s"] / b["tokens_per_s"]
                if m["peak_bytes"] and b["peak_bytes"]:
                    m["peak_ratio"] = m["peak_bytes"] / b["peak_bytes"]
    return results


def table(results: list[dict]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = (f"{'backend':<13}{'precision':<13}{'load s':>8}{'x bf16':>8}{'weights MB':>12}{'x bf16':>8}"
              f"{'batch':>7}{'latency s':>11}{'tok/s':>9}{'x bf16':>8}{'peak MB':>10}{'x bf16':>8}")
    lines = [header]
    for r in results:
        weights = r.get("weights_bytes") or r.get("gpu_used_bytes")
        for batch, m in r["batches"].items():
            lines.append(f"{r['backend']:<13}{r['precision']:<13}{r['load_s']:>8.1f}{fmt(r.get('load_ratio'), '.2f'):>8}"
                         f"{fmt(weights and weights / MB, '.1f'):>12}{fmt(r.get('weights_ratio'), '.2f'):>8}"
                         f"{batch:>7}{m['latency_s']:>11.3f}{m['tokens_per_s']:>9.0f}"
                         f"{fmt(m.get('tokens_per_s_ratio'), '.2f'):>8}"
                         f"{fmt(m['peak_bytes'] and m['peak_bytes'] / MB, '.0f'):>10}{fmt(m.get('peak_ratio'), '.2f'):>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.dry_run:  # `make bench` on a machine without a GPU: check the script only
        print("no CUDA GPU here: running the dry run instead (tiny config on CPU); its figures are not the benchmark")
        args.dry_run = True
    plan = DRY if args.dry_run else FULL
    started = time.perf_counter()
    prec = precision_module()
    skip_bnb = ensure_bitsandbytes(not args.no_install)
    folder = Path(tempfile.mkdtemp(prefix="gpu-backends-")) / "model"
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'no GPU'}), torch "
          f"{torch.__version__}; model {plan['config']['num_hidden_layers']} layers x {plan['config']['hidden_size']}; "
          f"built and saved in {build_model(plan['config'], folder, device):.1f} s")
    results = []
    for precision in PRECISIONS:
        if precision.startswith("bnb") and skip_bnb:
            print(f"skipped {precision}: {skip_bnb}")
            continue
        if time.perf_counter() - started > args.budget_s:
            print(f"skipped {precision}: past the {args.budget_s:.0f} s budget")
            continue
        results.append(measure_transformers(precision, folder, plan, device, prec))
        print(f"done {precision} at {time.perf_counter() - started:.0f} s")
    if importlib.util.find_spec("vllm") is None or device != "cuda":
        print("skipped vLLM: " + ("not installed here (pip install 'invoicelab[vllm]')" if device == "cuda"
                                  else "needs a CUDA GPU"))
    else:
        for quantization in (None, None if skip_bnb else "bitsandbytes"):
            if time.perf_counter() - started > args.budget_s:
                print(f"skipped vLLM {quantization or 'bf16'}: past the budget")
                break
            try:
                results.append(measure_vllm(folder, plan, quantization))
            except Exception as err:  # noqa: BLE001 - report it, keep the transformers results
                print(f"vLLM {quantization or 'bf16'} failed: {type(err).__name__}: {err}")
            if quantization is None and skip_bnb:
                break
    print(f"total {time.perf_counter() - started:.0f} s")
    return with_ratios(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny config, 2 new tokens (CPU is enough)")
    parser.add_argument("--out", type=Path, help="write every measurement to this JSON file")
    parser.add_argument("--no-install", action="store_true", help="do not pip-install a missing bitsandbytes")
    parser.add_argument("--budget-s", type=float, default=450.0, help="start no new measurement after this")
    args = parser.parse_args()
    results = run(args)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps({"dry_run": args.dry_run, "results": results}, indent=2, default=str))
    nf4 = next((r for r in results if r["precision"] == "bnb-nf4" and r["backend"] == "transformers"), None)
    value = nf4["weights_ratio"] if nf4 and "weights_ratio" in nf4 else float("nan")
    print(json.dumps({"benchmark": "gpu_backends", "metric": "bnb-nf4 weights memory / bf16 (transformers)",
                      "value": float(f"{value:.4g}"), "target": "<= 0.45", "met": bool(value <= 0.45),
                      "dry_run": args.dry_run}))


if __name__ == "__main__":
    main()
