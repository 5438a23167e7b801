"""The transformers text-LLM engine: load a causal LM at a chosen precision, generate in batches.

``TextLLM`` loads one model (fp32, bf16, fp16, torch dynamic int8, bitsandbytes int8 or nf4),
turns chat conversations plus an answer prefix into left-padded batches, and decodes greedily or
by sampling. ``info()`` reports what was really loaded (dtypes, quantized layer classes, memory),
not what was asked for. It never downloads weights itself, never falls back silently to another
precision (a precision it cannot honour is an error), and never imports Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from invoicelab.backends.models import resolve_model
from invoicelab.backends.precision import (  # noqa: F401 - PrecisionError is part of this module's interface
    PrecisionError,
    check_loaded,
    linear_layer_counts,
    load_model,
    memory_footprint,
    param_dtype_counts,
    pinned,
    quiet_bnb_cast_log,
)
from invoicelab.config import PRECISIONS

@dataclass
class Generation:
    """One generated answer.

    Attributes:
        text: The newly generated text (without the answer prefix, stopped at end-of-sequence).
        tokens_in: Prompt tokens, answer prefix included, padding excluded.
        tokens_out: Generated tokens, the end-of-sequence token included, padding excluded.
    """

    text: str
    tokens_in: int
    tokens_out: int


class TextLLM:
    """A causal language model loaded once through transformers, generating chat answers in batches."""

    def __init__(self, source: str, precision: str = "fp32", num_threads: int | None = None, device: str = "auto",
                 revision: str | None = None):
        """Load the tokenizer and the model at the asked precision.

        Args:
            source: A bundled alias, a local folder, a ``.gguf`` file or a Hugging Face id
                (see ``resolve_model``).
            precision: One of ``PRECISIONS``.
            num_threads: CPU threads for torch (``torch.set_num_threads``, process-wide); None keeps
                torch's default.
            device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda[:n]"``.
            revision: The Hugging Face commit to load (ids only; pinned by the driver).

        Raises:
            ValueError: unknown precision.
            PrecisionError: the precision cannot run here (e.g. int8-dynamic on CUDA, fp16
                matmul unsupported) or the loaded model is not what was asked for.
            ModelSourceError: the source cannot be resolved.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
        torch = _import_torch()
        start = time.perf_counter()
        if num_threads:
            torch.set_num_threads(num_threads)
        self.source, self.precision = source, precision
        self.device = pick_device(device)
        self.path = resolve_model(source)
        self.tokenizer = load_tokenizer(self.path, revision)
        self.model = load_model(self.path, precision, self.device, revision)
        check_loaded(self.model, precision)
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.load_seconds = time.perf_counter() - start

    def generate(self, conversations: list[list[dict]], answer_prefixes: list[str], max_new_tokens: int,
                 temperature: float = 0.0, top_p: float = 1.0,
                 done: Callable[[int, str], bool] | None = None) -> list[Generation]:
        """Generate one answer per conversation, all in one left-padded batch.

        Args:
            conversations: Chat messages per item (``[{"role": "system", "content": ...}, ...]``).
            answer_prefixes: Text that begins the assistant's turn per item (e.g. ``'{"total": "'``);
                the model continues it.
            max_new_tokens: Most tokens to generate per item.
            temperature: 0 decodes greedily; above 0 samples (seed with ``torch.manual_seed``).
            top_p: Nucleus sampling mass (used only when sampling).
            done: ``done(i, text_so_far)`` says that item ``i`` has all it needs (say, a complete
                JSON object); that item then stops generating while the rest of the batch goes on.

        Returns:
            One ``Generation`` per conversation, in order.

        Raises:
            ValueError: the two lists differ in length.
        """
        if len(conversations) != len(answer_prefixes):
            raise ValueError(f"{len(conversations)} conversations but {len(answer_prefixes)} answer prefixes")
        if not conversations:
            return []
        prompts = [self.prompt_text(c, p) for c, p in zip(conversations, answer_prefixes, strict=True)]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.model.device)
        stopper = _DoneCriteria(self.tokenizer, batch, done) if done else None
        new_tokens = self._generate_ids(batch, max_new_tokens, temperature, top_p, stopper)
        tokens_in = batch["attention_mask"].sum(dim=1).tolist()
        rows = new_tokens.tolist()
        if stopper:  # items that ``done`` stopped are followed by padding only: cut them where they stopped
            rows = [row[:stopper.finished.get(i, len(row))] for i, row in enumerate(rows)]
        return [self._decode(row, n_in) for row, n_in in zip(rows, tokens_in, strict=True)]

    def prompt_text(self, conversation: list[dict], answer_prefix: str) -> str:
        """The chat-templated prompt with the assistant turn opened and the answer prefix appended."""
        opened = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return opened + answer_prefix

    def _generate_ids(self, batch: Any, max_new_tokens: int, temperature: float, top_p: float,
                      stopper: Any = None) -> Any:
        """Run ``model.generate`` and return only the new token ids (batch x new)."""
        import torch
        from transformers import StoppingCriteriaList

        extra = {"stopping_criteria": StoppingCriteriaList([stopper])} if stopper else {}
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}
        with torch.inference_mode(), quiet_bnb_cast_log():
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      **(sampling or {"do_sample": False}), **extra)
        return out[:, batch["input_ids"].shape[1]:]

    def _decode(self, new_ids: list[int], tokens_in: int) -> Generation:
        """Cut a row of new ids at the first end-of-sequence token and decode it."""
        stop = next((i for i, tok in enumerate(new_ids) if tok in self.eos_ids), None)
        kept = new_ids if stop is None else new_ids[:stop]
        tokens_out = len(new_ids) if stop is None else stop + 1
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Generation(text=text, tokens_in=int(tokens_in), tokens_out=tokens_out)

    def info(self) -> dict[str, Any]:
        """What was really loaded, for the results table.

        Returns:
            source, resolved path, precision asked and loaded, parameter elements per dtype,
            linear layer classes and counts (all, and quantized ones), memory footprint in bytes,
            device, load seconds, torch threads and library versions.
        """
        import torch
        import transformers

        linear = linear_layer_counts(self.model)
        info = {
            "source": self.source,
            "resolved_path": self.path,
            "precision": self.precision,
            "precision_loaded": self.precision,  # check_loaded raised if it were otherwise
            "param_dtypes": param_dtype_counts(self.model),
            "linear_layers": linear,
            "quantized_linear_layers": {k: v for k, v in linear.items() if k != "Linear"},
            "memory_footprint_bytes": memory_footprint(self.model, self.precision),
            "device": str(self.model.device),
            "load_seconds": round(self.load_seconds, 3),
            "num_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        }
        if self.precision.startswith("bnb"):
            import bitsandbytes

            info["bitsandbytes_version"] = bitsandbytes.__version__
        if self.precision == "bnb-int8":
            info["note"] = ("bitsandbytes int8 (LLM.int8): activations cast to float16, outlier columns (>6.0) chosen "
                            "per call over the whole batch, so batch composition can change an answer")
        if self.precision == "int8-dynamic":
            info["note"] = (f"torch dynamic int8 ({torch.backends.quantized.engine} engine): per-tensor int8 weights, "
                            "activations quantized per call with one scale shared by the whole batch")
        return info


class _DoneCriteria:
    """Per-item stopping: decode each unfinished item's new tokens and ask ``done``."""

    def __init__(self, tokenizer: Any, batch: Any, done: Callable[[int, str], bool]):
        self.tokenizer, self.done = tokenizer, done
        self.start = batch["input_ids"].shape[1]
        self.finished: dict[int, int] = {}  # item -> new tokens it had when it was done

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        for i in range(input_ids.shape[0]):
            if i not in self.finished:
                text = self.tokenizer.decode(input_ids[i, self.start:], skip_special_tokens=True)
                if self.done(i, text):
                    self.finished[i] = input_ids.shape[1] - self.start
        flags = [i in self.finished for i in range(input_ids.shape[0])]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


def _import_torch() -> Any:
    """Import torch and transformers, naming what to install when they are missing."""
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the transformers backend needs torch and transformers (pip install invoicelab): {exc}") \
            from exc
    return torch


def pick_device(device: str) -> str:
    """Resolve ``"auto"`` to ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrecisionError(f"device {device!r} asked for but torch sees no CUDA GPU; use device='cpu'")
    return device


def load_tokenizer(path: str, revision: str | None = None) -> Any:
    """The model's tokenizer, set to pad on the left (and given a pad token if it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **pinned(revision))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end an answer: the generation config's and the tokenizer's end-of-sequence ids."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


