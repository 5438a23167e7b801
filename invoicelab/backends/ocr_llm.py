"""The ocr-llm backend: page text from OCR, then a text LLM through transformers.

The model answers in JSON (the prompt begins the answer for it); the answer is parsed, each
value is checked against its field type, and where the model's value is missing or invalid the
rules baseline's value is taken if the variant asks for it, with the field recorded in
``fallback_fields`` so that the model's own accuracy stays visible.
"""

from __future__ import annotations

from typing import Any

from invoicelab.backends.base import DocInput, Extraction
from invoicelab.backends.rules import extract_rules
from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.parsing import parse_fields
from invoicelab.prompts import Prompt
from invoicelab.scoring import is_valid


class OcrLlmBackend:
    """OCR text -> chat prompt -> batched generation -> JSON -> typed, validated fields."""

    uses_prompt = True

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                 seed: int = 0, device: str = "cpu"):
        from invoicelab.backends.hf import TextLLM, pick_device
        from invoicelab.backends.models import resolve_model

        self.variant, self.fields, self.seed = variant, fields, seed
        pick_device(device)  # a GPU variant where torch has no CUDA fails here, before any model work
        self.llm = TextLLM(resolve_model(variant.model), precision=variant.precision, num_threads=num_threads,
                           device=device, revision=variant.revision)

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        if prompt is None:
            raise ValueError("ocr-llm needs a prompt")
        limit = self.variant.ocr.max_chars
        rendered = [prompt.render(self.fields, d.text[:limit]) for d in docs]
        gen = self.variant.generation
        if gen.temperature > 0:
            import torch

            torch.manual_seed(self.seed)
        prefixes = [prefix for _, prefix in rendered]
        outputs = self.llm.generate(
            [messages for messages, _ in rendered], prefixes,
            max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
            done=lambda i, text: self._answered(prefixes[i] + text),
        )
        return [self._extraction(d, prefix, out) for d, (_, prefix), out in zip(docs, rendered, outputs)]

    def _answered(self, text: str) -> bool:
        """The answer so far closes its JSON object or already holds every field: stop generating."""
        if "}" in text:
            return True
        return all(v is not None for v in parse_fields(text, list(self.fields)).fields.values())

    def _extraction(self, doc: DocInput, prefix: str, out: Any) -> Extraction:
        parsed = parse_fields(out.text, list(self.fields), prefix=prefix)
        values = dict(parsed.fields)
        invalid = [f for f, spec in self.fields.items() if not is_valid(values.get(f), spec)]
        fallback: list[str] = []
        if invalid and self.variant.fallback == "rules":
            rules = extract_rules(doc.text, {f: self.fields[f] for f in invalid})
            fallback = [f for f in invalid if rules.get(f) is not None]
            values.update({f: rules[f] for f in fallback})
        error = None
        if parsed.error and not fallback:
            error = f"unparseable model output: {parsed.error}"
        return Extraction(
            fields=values, raw_output=prefix + out.text, parse_error=parsed.error,
            tokens_in=out.tokens_in, tokens_out=out.tokens_out, fallback_fields=fallback, error=error,
        )

    def info(self) -> dict[str, Any]:
        return {"backend": "ocr-llm", **self.llm.info()}
