"""Per-batch measurements of a model call: wall time, process memory, GPU memory.

``BatchMeter`` wraps one backend call. On CPU it reports the process's peak resident set size
(``getrusage``: the high-water mark of the whole process so far, which includes the model); on a
GPU it also resets and reads torch's peak allocation for the batch and asks NVML how much of the
device is in use (what other processes and the CUDA context hold too). torch is read only where
the backend already imported it, so a rules or HTTP backend never loads it. No Ray.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

METER_COLUMNS = ("batch_docs", "batch_latency_s", "batch_tokens_per_s", "peak_rss_bytes", "gpu_peak_bytes",
                 "gpu_used_bytes")


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far, in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak() -> bool:
    """Start a new high-water mark of resident memory (Linux: ``/proc/self/clear_refs``) and of torch's GPU
    allocation. Returns whether the resident one could be reset (else ``window_peak`` is the process's peak)."""
    torch = _cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def window_peak() -> int:
    """Peak memory since ``reset_peak``: torch's peak GPU allocation on a GPU, else resident memory (VmHWM)."""
    torch = _cuda()
    if torch is not None:
        return int(torch.cuda.max_memory_allocated())
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def cap_memory(gb: float | None) -> int | None:
    """Limit this process's private memory to ``gb`` (its data segment, ``RLIMIT_DATA``: heap and private
    anonymous mappings, reserved or touched) so that an allocation past it fails as an exception inside
    the model call instead of the kernel killing the process. Returns the limit in bytes (None: no limit)."""
    if not gb:
        return None
    limit = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    return limit


def _cuda() -> Any:
    """torch, if a backend has imported it and it sees a GPU; else None."""
    torch = sys.modules.get("torch")
    try:
        return torch if torch is not None and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA set-up only means no GPU numbers
        return None


def nvml_used_bytes(index: int = 0) -> int | None:
    """Memory in use on GPU ``index`` as NVML sees it (all processes), or None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:  # noqa: BLE001 - NVML missing or no driver: the column stays empty
        return None


class BatchMeter:
    """Context manager measuring one batch; ``result(docs, tokens_out)`` gives the columns."""

    def __enter__(self) -> BatchMeter:
        self.torch = _cuda()
        if self.torch is not None:
            self.torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start

    def result(self, docs: int, tokens_out: int) -> dict[str, Any]:
        """The batch's columns: documents really in the call, its time, tokens/s and memory peaks."""
        gpu_peak = gpu_used = None
        if self.torch is not None:
            gpu_peak = int(self.torch.cuda.max_memory_allocated())
            gpu_used = nvml_used_bytes(self.torch.cuda.current_device())
        return {
            "batch_docs": docs, "batch_latency_s": self.seconds,
            "batch_tokens_per_s": tokens_out / self.seconds if self.seconds > 0 and tokens_out else None,
            "peak_rss_bytes": peak_rss_bytes(), "gpu_peak_bytes": gpu_peak, "gpu_used_bytes": gpu_used,
        }
