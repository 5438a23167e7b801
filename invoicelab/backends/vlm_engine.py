"""The transformers vision-language engine: load an image-text-to-text model, generate in batches.

``VisionLLM`` loads a model with ``AutoModelForImageTextToText`` at a precision (the same float and
quantized loading as the text engine) and its processor (see ``vlm_processor``), writes each
conversation through the processor's chat template with image places in it, and runs one
left-padded batch through the processor and ``generate``: greedily or by sampling, stopped at a
string or constrained to a JSON schema (``structured.py``). ``info()`` reports what was really
loaded and the image resolution really used. It never downloads weights itself and never imports Ray.
"""

from __future__ import annotations

import time
from typing import Any

from invoicelab.backends.hf import (
    Generation,
    begin_load,
    decode_answer,
    generate_new_ids,
    loaded_model_info,
    eos_token_ids,
    output_vocab_size,
)
from invoicelab.backends.models import ModelSourceError
from invoicelab.backends.precision import (
    load_model,
)
from invoicelab.backends.vlm_processor import load_processor, resolution


class VisionLLM:
    """A vision-language model and its processor, loaded once, answering conversations about images in batches."""

    def __init__(self, source: str, precision: str = "fp32", num_threads: int | None = None, device: str = "auto",
                 revision: str | None = None, max_pixels: int | None = None,
                 keep_float: list[str] | tuple[str, ...] = (), offload: dict[str, Any] | None = None):
        """Load the processor and the model.

        Args:
            source: A local folder or a Hugging Face id (see ``resolve_model``).
            precision: One of ``PRECISIONS``.
            num_threads: CPU threads for torch (process-wide); None keeps torch's default.
            device: ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.
            revision: The Hugging Face commit to load (ids only; pinned by the driver).
            max_pixels: Most pixels per image, set through the processor's own knob (None: its default).
            keep_float: int8-dynamic and *-weight-only: Linear layers whose name ends with one of these
                stay in float (the vision tower's too).
            offload: A variant's ``offload`` setting as a dict: weights past ``device_gb`` go to CPU
                memory, then disk (see ``precision.offload_kwargs``).

        Raises:
            ValueError: unknown precision; a processor without images or chat template; ``max_pixels``
                for a model that resizes every image to one size.
            PrecisionError: the precision cannot run here, or the loaded model does not have it.
            ModelSourceError: the model's files cannot be found (offline: not in the local cache).
        """
        start = time.perf_counter()
        self.device, self.path = begin_load(source, precision, num_threads, device)
        from transformers import AutoModelForImageTextToText

        self.source, self.precision = source, precision
        try:
            self.processor, self.processor_note = load_processor(self.path, revision)
        except OSError as err:  # transformers' message does not name the model (offline: not in the cache)
            raise ModelSourceError(f"model {source!r}: {err}") from err
        self.tokenizer = self.processor.tokenizer
        self.image_kwargs, self.image_setting = resolution(self.processor.image_processor, max_pixels)
        self.model = load_model(self.path, precision, self.device, revision, model_class=AutoModelForImageTextToText,
                                keep_float=keep_float, offload=offload)  # checks that the model has the precision, or raises
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.vocab_size = output_vocab_size(self.model)
        self.load_seconds = time.perf_counter() - start

    def generate(self, conversations: list[list[dict]], images: list[list[Any]], answer_prefixes: list[str],
                 max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 schema: dict[str, Any] | None = None, stop: str | None = None) -> list[Generation]:
        """Generate one answer per conversation, all in one left-padded batch.

        Args:
            conversations: Chat messages per item, contents as lists of parts (``{"type": "text",
                "text": ...}``, ``{"type": "image"}``), one image part per image of the item.
            images: PIL images per item, in the order of its image parts.
            answer_prefixes: Text that begins the assistant's turn per item ("" for none).
            max_new_tokens: Most tokens to generate per item.
            temperature: 0 decodes greedily; above 0 samples (seed with ``torch.manual_seed``).
            top_p: Nucleus sampling mass (sampling only).
            schema: A JSON schema every answer must follow (xgrammar-constrained decoding).
            stop: A string that ends an answer (``generate``'s ``stop_strings``); the answer is cut just
                after its first occurrence.

        Returns:
            One ``Generation`` per conversation, in order; ``tokens_in`` counts the image tokens too.

        Raises:
            ValueError: the lists differ in length.
        """
        if not len(conversations) == len(images) == len(answer_prefixes):
            raise ValueError(f"{len(conversations)} conversations, {len(images)} image lists and "
                             f"{len(answer_prefixes)} answer prefixes")
        if not conversations:
            return []
        prompts = [self.prompt_text(c, p) for c, p in zip(conversations, answer_prefixes, strict=True)]
        batch = self.processor(text=prompts, images=images, padding=True, return_tensors="pt", **self.image_kwargs)
        batch = batch.to(self.device, dtype=self.model.dtype)  # dtype: floating tensors (pixels) only
        new_tokens = self._generate_ids(batch, max_new_tokens, temperature, top_p, schema, stop)
        tokens_in = batch["attention_mask"].sum(dim=1).tolist()
        return [self._decode(row, n_in, stop) for row, n_in in zip(new_tokens.tolist(), tokens_in, strict=True)]

    def prompt_text(self, conversation: list[dict], answer_prefix: str) -> str:
        """The processor's chat template with the assistant turn opened and the answer prefix appended."""
        opened = self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return opened + answer_prefix

    def _generate_ids(self, batch: Any, max_new_tokens: int, temperature: float, top_p: float,
                      schema: dict[str, Any] | None, stop: str | None) -> Any:
        """The new token ids of ``batch`` (batch x new), constrained to ``schema`` when given."""
        grammar = None
        if schema is not None:
            from invoicelab.backends.structured import json_logits_processor

            grammar = json_logits_processor(self.tokenizer, schema, self.vocab_size, sorted(self.eos_ids))
        return generate_new_ids(self.model, self.tokenizer, self.eos_ids, batch, max_new_tokens, temperature, top_p,
                                stop, grammar)

    def _decode(self, new_ids: list[int], tokens_in: int, stop: str | None) -> Generation:
        return decode_answer(self.tokenizer, self.eos_ids, new_ids, tokens_in, stop)

    def info(self) -> dict[str, Any]:
        """What was really loaded: classes, dtypes, layers, memory, image resolution, timing, versions."""
        info = {
            **loaded_model_info(self.model, self.source, self.path, self.precision, self.load_seconds),
            "model_class": type(self.model).__name__,
            "processor_class": type(self.processor).__name__,
            "image_processor_class": type(self.processor.image_processor).__name__,
            "tokenizer_class": type(self.tokenizer).__name__,
            "image_resolution": self.image_setting,
            "prompt_format": "chat",
        }
        if self.processor_note:
            info["processor_note"] = self.processor_note
        return info
