"""The transformers text-LLM engine: load a causal LM at a chosen precision, generate in batches.

``TextLLM`` loads one model (fp32, bf16, fp16, torch dynamic int8, bitsandbytes int8 or nf4),
turns conversations plus an answer prefix into left-padded batches (through the chat template, or
as plain text for base models), and decodes greedily or by sampling, free, stopped at a string, or
constrained to a JSON schema (see ``structured.py``). ``info()`` reports what was really loaded
(dtypes, quantized layer classes, memory), not what was asked for. It never downloads weights itself, never falls back silently to another
precision (a precision it cannot honour is an error), and never imports Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from invoicelab.backends.models import resolve_model
from invoicelab.backends.precision import (  # noqa: F401 - PrecisionError is part of this module's interface
    PrecisionError,
    check_loaded,
    linear_layer_counts,
    load_model,
    memory_footprint,
    param_dtype_counts,
    pinned,
    placement,
    quiet_bnb_cast_log,
)
from invoicelab.backends.precision_quant import describe
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
                 revision: str | None = None, prompt_format: str = "auto",
                 keep_float: list[str] | tuple[str, ...] = (), offload: dict[str, Any] | None = None):
        """Load the tokenizer and the model at the asked precision.

        Args:
            source: A bundled alias, a local folder, a ``.gguf`` file or a Hugging Face id
                (see ``resolve_model``).
            precision: One of ``PRECISIONS``.
            num_threads: CPU threads for torch (``torch.set_num_threads``, process-wide); None keeps
                torch's default.
            device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda[:n]"``.
            revision: The Hugging Face commit to load (ids only; pinned by the driver).
            prompt_format: ``"chat"`` (the tokenizer's chat template), ``"completion"`` (plain text,
                for base models) or ``"auto"`` (chat when the tokenizer has a template).
            keep_float: int8-dynamic and *-weight-only: Linear layers whose name ends with one of these
                stay in float.
            offload: A variant's ``offload`` setting as a dict (``device_gb``, ``cpu_gb``, ``folder``):
                weights past ``device_gb`` go to CPU memory, then disk (see ``precision.offload_kwargs``).

        Raises:
            ValueError: unknown precision, or chat asked for a tokenizer without a chat template.
            PrecisionError: the precision cannot run here (e.g. int8-dynamic on CUDA, fp16
                matmul unsupported) or the loaded model is not what was asked for.
            ModelSourceError: the source cannot be resolved.
        """
        start = time.perf_counter()
        self.device, self.path = begin_load(source, precision, num_threads, device)
        self.source, self.precision = source, precision
        self.tokenizer = load_tokenizer(self.path, revision)
        self.prompt_format = resolve_prompt_format(prompt_format, self.tokenizer)
        self.model = load_model(self.path, precision, self.device, revision, keep_float=keep_float, offload=offload)
        check_loaded(self.model, precision)
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.vocab_size = output_vocab_size(self.model)
        self.load_seconds = time.perf_counter() - start

    def generate(self, conversations: list[list[dict]], answer_prefixes: list[str], max_new_tokens: int,
                 temperature: float = 0.0, top_p: float = 1.0, schema: dict[str, Any] | None = None,
                 stop: str | None = None) -> list[Generation]:
        """Generate one answer per conversation, all in one left-padded batch.

        Each row ends at its end-of-sequence token, at ``stop`` or after ``max_new_tokens``; a row that
        ended waits (padded) while the rest of the batch goes on.

        Args:
            conversations: Chat messages per item (``[{"role": "system", "content": ...}, ...]``).
            answer_prefixes: Text that begins the assistant's turn per item (e.g. ``'{"total": "'``);
                the model continues it.
            max_new_tokens: Most tokens to generate per item.
            temperature: 0 decodes greedily; above 0 samples (seed with ``torch.manual_seed``).
            top_p: Nucleus sampling mass (used only when sampling).
            schema: A JSON schema every answer (its prefix included) must follow: grammar-constrained
                decoding through xgrammar, which ends the answer with an end-of-sequence token after
                the object.
            stop: A string that ends an answer (through ``generate``'s ``stop_strings``); the answer is
                cut just after its first occurrence, wherever it is (inside a quoted value too).

        Returns:
            One ``Generation`` per conversation, in order.

        Raises:
            ValueError: the two lists differ in length, or a prefix cannot begin an answer of ``schema``.
        """
        if len(conversations) != len(answer_prefixes):
            raise ValueError(f"{len(conversations)} conversations but {len(answer_prefixes)} answer prefixes")
        if not conversations:
            return []
        prompts = [self.prompt_text(c, p) for c, p in zip(conversations, answer_prefixes, strict=True)]
        batch = self.encode(prompts)
        grammar = self._grammar(schema, answer_prefixes) if schema is not None else None
        new_tokens = self._generate_ids(batch, max_new_tokens, temperature, top_p, stop, grammar)
        tokens_in = batch["attention_mask"].sum(dim=1).tolist()
        return [self._decode(row, n_in, stop) for row, n_in in zip(new_tokens.tolist(), tokens_in, strict=True)]

    def prompt_text(self, conversation: list[dict], answer_prefix: str) -> str:
        """The prompt in this model's format, the assistant turn opened and the answer prefix appended.

        chat: the tokenizer's chat template; completion: the messages' texts, each followed by a blank
        line (for base models without a template).
        """
        if self.prompt_format == "completion":
            return completion_text(conversation) + answer_prefix
        opened = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return opened + answer_prefix

    def encode(self, prompts: list[str]) -> Any:
        """Prompts as one left-padded batch on the model's device.

        A chat template writes its own special tokens; a completion prompt gets the tokenizer's (a
        beginning-of-sequence token where the model expects one, as Gemma does).
        """
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True,
                               add_special_tokens=self.prompt_format == "completion")
        return batch.to(self.device)  # not model.device: with offloading, the first weights may be on disk

    def _grammar(self, schema: dict[str, Any], answer_prefixes: list[str]) -> Any:
        """A logits processor keeping each row inside ``schema``, from where its answer prefix left it."""
        from invoicelab.backends.structured import json_logits_processor

        return json_logits_processor(self.tokenizer, schema, self.vocab_size, sorted(self.eos_ids), answer_prefixes)

    def _generate_ids(self, batch: Any, max_new_tokens: int, temperature: float, top_p: float,
                      stop: str | None = None, grammar: Any = None) -> Any:
        return generate_new_ids(self.model, self.tokenizer, self.eos_ids, batch, max_new_tokens, temperature, top_p,
                                stop, grammar)

    def _decode(self, new_ids: list[int], tokens_in: int, stop: str | None = None) -> Generation:
        return decode_answer(self.tokenizer, self.eos_ids, new_ids, tokens_in, stop)

    def info(self) -> dict[str, Any]:
        """What was really loaded, for the results table.

        Returns:
            source, resolved path, precision asked and loaded, parameter elements per dtype,
            linear layer classes and counts (all, and quantized ones), memory footprint in bytes,
            device, load seconds, torch threads and library versions.
        """
        return {**loaded_model_info(self.model, self.source, self.path, self.precision, self.load_seconds),
                "prompt_format": self.prompt_format}



def loaded_model_info(model: Any, source: str, path: str, precision: str, load_seconds: float) -> dict[str, Any]:
    """What a loaded transformers model really is: source, precision asked and loaded, parameter elements
    per dtype, linear layer classes (all, and quantized ones), memory footprint, device, load time, torch
    threads, library versions, and the quantization details of ``precision_quant.describe``."""
    import torch
    import transformers

    linear = linear_layer_counts(model)
    placed = placement(model)
    return {
        "source": source,
        "resolved_path": path,
        "precision": precision,
        "precision_loaded": precision,  # check_loaded raised if it were otherwise
        "param_dtypes": param_dtype_counts(model),
        "linear_layers": linear,
        "quantized_linear_layers": {k: v for k, v in linear.items() if k != "Linear"},
        "memory_footprint_bytes": memory_footprint(model, precision),
        "device": str(model.device),
        "load_seconds": round(load_seconds, 3),
        "num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        **describe(model, precision),  # float layers kept, batch dependence, note, versions
        **({"placement": placed} if placed else {}),  # offloaded: modules and bytes per device, cpu, disk
    }


def decode_answer(tokenizer: Any, eos_ids: set[int], new_ids: list[int], tokens_in: int,
                  stop: str | None = None) -> Generation:
    """Cut a row of new ids at the first end-of-sequence token (or just after ``stop``) and decode it.

    Shared by the text and the vision-language engines, so both count and cut answers alike.
    """
    end = next((i for i, tok in enumerate(new_ids) if tok in eos_ids), None)
    kept = new_ids if end is None else new_ids[:end]
    tokens_out = len(new_ids) if end is None else end + 1
    at = stop_index(tokenizer, kept, stop) if stop else None
    if at is not None:  # what follows the stop is padding (or the rest of the stopping token)
        kept, tokens_out = kept[:at + 1], at + 1
    text = tokenizer.decode(kept, skip_special_tokens=True)
    if at is not None and stop in text:
        text = text[:text.index(stop) + len(stop)]
    return Generation(text=text, tokens_in=int(tokens_in), tokens_out=tokens_out)


def begin_load(source: str, precision: str, num_threads: int | None, device: str) -> tuple[str, str]:
    """What every transformers engine does before loading: check the precision, set torch's threads,
    pick the device and resolve the model source. Returns ``(device, local path or id)``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    torch = _import_torch()
    if num_threads:
        torch.set_num_threads(num_threads)
    return pick_device(device), resolve_model(source)


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




def resolve_prompt_format(prompt_format: str, tokenizer: Any) -> str:
    """``"chat"`` or ``"completion"``: auto picks chat when the tokenizer has a chat template.

    Raises:
        ValueError: an unknown format, or chat for a tokenizer without a template.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "auto":
        return "chat" if has_template else "completion"
    if prompt_format == "chat" and not has_template:
        raise ValueError("prompt_format 'chat' but this tokenizer has no chat template (a base model?); "
                         "use prompt_format: completion or auto")
    if prompt_format not in ("chat", "completion"):
        raise ValueError(f"unknown prompt_format {prompt_format!r}; available: auto, chat, completion")
    return prompt_format


def completion_text(conversation: list[dict]) -> str:
    """A conversation as plain text for a base model: each message's text, then a blank line."""
    return "".join(str(message["content"]).strip() + "\n\n" for message in conversation)


def stop_index(tokenizer: Any, ids: list[int], stop: str) -> int | None:
    """Index of the token that completes the first occurrence of ``stop`` in the decoded ids (None: absent).

    One pass over the tokens, each decoded alone, keeping only the last ``len(stop) - 1`` characters
    before it: linear in the answer's length.
    """
    carry = ""
    for i, piece in enumerate(tokenizer.batch_decode([[tok] for tok in ids], skip_special_tokens=True)):
        window = carry + piece
        if stop in window:
            return i
        carry = window[max(0, len(window) - len(stop) + 1):] if len(stop) > 1 else ""
    return None


def output_vocab_size(model: Any) -> int:
    """Rows of the model's output layer (the logits' width), which can exceed the tokenizer's vocabulary."""
    head = model.get_output_embeddings()
    size = getattr(head, "out_features", None)
    return int(size) if size else int(model.config.get_text_config().vocab_size)


def generate_new_ids(model: Any, tokenizer: Any, eos_ids: set[int], batch: Any, max_new_tokens: int,
                     temperature: float, top_p: float, stop: str | None = None, grammar: Any = None) -> Any:
    """Run ``model.generate`` on a tokenized batch and return only the new token ids (batch x new).

    Greedy at temperature 0; ``stop`` ends an answer at that string, ``grammar`` (a logits processor,
    see ``structured``) constrains every step. Shared by the text and the vision-language engines.
    """
    import torch

    extra: dict[str, Any] = {}
    if grammar is not None:
        from transformers import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList([grammar])
    if stop:
        extra.update(stop_strings=[stop], tokenizer=tokenizer)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}
    with torch.inference_mode(), quiet_bnb_cast_log():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=sorted(eos_ids), **(sampling or {"do_sample": False}), **extra)
    return out[:, batch["input_ids"].shape[1]:]
