"""The ocr-llm backend: page text from OCR, then a text LLM through transformers.

The model answers in JSON, made so by the variant's ``structured`` setting: decoding constrained
to the fields' JSON schema (json-schema), the prompt beginning the answer with the first key and
the answer stopping at its first closing brace (prefix), or a free answer (none). The answer is
parsed, each value is checked against its field type, and where the model's value is missing or
invalid the rules baseline's value is taken if the variant asks for it, with the field recorded in
``fallback_fields`` so that the model's own accuracy stays visible.
"""

from __future__ import annotations

from typing import Any

from invoicelab.backends.base import DocInput, Extraction
from invoicelab.backends.rules import extract_rules
from invoicelab.backends.structured import answer_schema
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
                           device=device, revision=variant.revision, prompt_format=variant.prompt_format,
                           keep_float=variant.keep_float,
                           offload=variant.offload.model_dump() if variant.offload else None)
        self.schema = answer_schema(fields) if variant.structured == "json-schema" else None

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        prefixes, outputs = self._generate(docs, prompt)
        return [self._extraction(d, prefix, out) for d, prefix, out in zip(docs, prefixes, outputs)]

    def _generate(self, docs: list[DocInput], prompt: Prompt | None) -> tuple[list[str], list[Any]]:
        """The answer prefixes and the generations for ``docs``, as the variant's settings ask."""
        if prompt is None:
            raise ValueError("ocr-llm needs a prompt")
        limit = self.variant.ocr.max_chars
        rendered = [prompt.render(self.fields, d.text[:limit]) for d in docs]
        gen = self.variant.generation
        if gen.temperature > 0:
            import torch

            torch.manual_seed(self.seed)
        prefixing = self.variant.structured == "prefix"
        prefixes = [prefix if prefixing else "" for _, prefix in rendered]
        outputs = self.llm.generate(
            [messages for messages, _ in rendered], prefixes,
            max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
            schema=self.schema, stop="}" if prefixing else None,
        )
        return prefixes, outputs

    def prompt_tokens(self, docs: list[DocInput], prompt: Prompt) -> list[int]:
        """Prompt tokens per document as ``extract`` will give them to the model (template and prefix included)."""
        prefixing = self.variant.structured == "prefix"
        texts = [self.llm.prompt_text(messages, prefix if prefixing else "")
                 for messages, prefix in (prompt.render(self.fields, d.text[:self.variant.ocr.max_chars]) for d in docs)]
        return [len(ids) for ids in self.llm.tokenizer(texts, add_special_tokens=False)["input_ids"]]

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
        info = {"backend": "ocr-llm", **self.llm.info(), "structured": self.variant.structured}
        if self.schema is not None:
            from importlib.metadata import version

            info["xgrammar_version"] = version("xgrammar")
        return info
