"""The rules backend: OCR text plus field-type heuristics, the floor every comparison needs.

It is what a user would otherwise write by hand before trying a model. No model, no prompt.
"""

from __future__ import annotations

from typing import Any

from invoicelab.backends.base import DocInput, Extraction
from invoicelab.backends.rules import extract_rules
from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.prompts import Prompt


class RulesBackend:
    """Keyword and pattern heuristics over the page text."""

    uses_prompt = False

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                 seed: int = 0, device: str = "cpu"):
        self.fields = fields

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        return [Extraction(fields=extract_rules(d.text, self.fields)) for d in docs]

    def info(self) -> dict[str, Any]:
        return {"backend": "rules"}
