"""The transformers-vlm backend: page images straight into a vision-language model.

The prompt's instruction (rendered with no document text: the page images stand in for it) goes
in the user turn after one image part per page, through the model's chat template; the batch runs
left-padded through the processor and ``generate`` (``vlm_engine``). The answer is made JSON by the
variant's ``structured`` setting (json-schema: xgrammar-constrained decoding; prefix: the assistant
turn begins with the first key and stops at the first closing brace; none: a free answer), then
parsed. There is no rules fallback: with no OCR text there is nothing for it to read. A document
without a readable page image is an error row with the reason; it never reaches the model.
"""

from __future__ import annotations

import io
import re
from typing import Any

from invoicelab.backends.base import DocInput, Extraction, extraction
from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.prompts import Prompt


class VlmBackend:
    """Page images + instruction -> chat template -> batched generation -> JSON -> fields."""

    uses_prompt = True

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                 seed: int = 0, device: str = "cpu"):
        from invoicelab.backends.structured import answer_schema
        from invoicelab.backends.vlm_engine import VisionLLM

        if variant.prompt_format == "completion":
            raise ValueError("prompt_format: completion is not available on transformers-vlm (image places are "
                             "written by the processor's chat template); use auto or chat")
        self.variant, self.fields, self.seed = variant, fields, seed
        self.llm = VisionLLM(variant.model, precision=variant.precision, num_threads=num_threads, device=device,
                             revision=variant.revision, max_pixels=variant.image.max_pixels,
                             keep_float=variant.keep_float,
                             offload=variant.offload.model_dump() if variant.offload else None)
        self.schema = answer_schema(fields) if variant.structured == "json-schema" else None

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        """One Extraction per document; documents without a readable page image get an error, not a model call."""
        if prompt is None:
            raise ValueError("transformers-vlm needs a prompt")
        pages = [page_images(d) for d in docs]
        results: list[Extraction | None] = [None if isinstance(p, list) else self._failed(p) for p in pages]
        ready = [i for i, p in enumerate(pages) if isinstance(p, list)]
        if not ready:
            return results  # type: ignore[return-value]
        messages, prefix = prompt.render(self.fields, text="")
        prefix = prefix if self.variant.structured == "prefix" else ""
        gen = self.variant.generation
        if gen.temperature > 0:
            import torch

            torch.manual_seed(self.seed)
        outputs = self.llm.generate(
            [with_images(messages, len(pages[i])) for i in ready], [pages[i] for i in ready], [prefix] * len(ready),
            max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
            schema=self.schema, stop="}" if self.variant.structured == "prefix" else None,
        )
        for i, out in zip(ready, outputs, strict=True):
            results[i] = self._extraction(prefix, out)
        return results  # type: ignore[return-value]

    def _failed(self, reason: str) -> Extraction:
        return Extraction(fields={f: None for f in self.fields}, error=reason)

    def _extraction(self, prefix: str, out: Any) -> Extraction:
        return extraction(out.text, out.tokens_in, out.tokens_out, prefix, list(self.fields))

    def info(self) -> dict[str, Any]:
        image = self.variant.image
        info = {"backend": "transformers-vlm", **self.llm.info(), "structured": self.variant.structured,
                "image_pages": image.pages, "image_max_side": image.max_side}
        if image.pages == "budget":
            info["image_pixel_budget"] = image.pixel_budget
        if self.schema is not None:
            from importlib.metadata import version

            info["xgrammar_version"] = version("xgrammar")
        return info


def page_images(doc: DocInput) -> list[Any] | str:
    """A document's page images as RGB PIL images, or the reason there are none usable.

    Returns:
        The images in page order, or a message (no image at all, or which page cannot be decoded).
    """
    from PIL import Image

    if not doc.images:
        return "no page image: the page stage gave this document none (is the variant's image setting read?)"
    images = []
    for number, data in enumerate(doc.images, start=1):
        try:
            with Image.open(io.BytesIO(data)) as image:
                images.append(image.convert("RGB"))
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds on broken bytes; each is this row's error
            detail = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(err))  # same reason for same bytes
            return f"page {number} image unreadable: {type(err).__name__}: {detail}"
    return images


def with_images(messages: list[dict[str, str]], n_images: int) -> list[dict[str, Any]]:
    """Messages with contents as typed parts, the last user turn opened by ``n_images`` image parts."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    out = []
    for i, message in enumerate(messages):
        parts: list[dict[str, Any]] = [{"type": "text", "text": message["content"]}]
        if i == last_user:
            parts = [{"type": "image"} for _ in range(n_images)] + parts
        out.append({"role": message["role"], "content": parts})
    return out
