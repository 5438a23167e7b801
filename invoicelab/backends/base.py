"""What every backend takes and returns (and how a generated answer becomes one); no Ray.

A backend turns a batch of documents (text from OCR and/or the file path) into field values.
It knows nothing of Ray, actors, scoring or files of results: the extractor around it applies the
error policy and scores. Construction loads the model once; ``extract`` may be called many times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.parsing import parse_fields
from invoicelab.prompts import Prompt


@dataclass(frozen=True)
class DocInput:
    """One document as a backend sees it.

    It never holds ground truth: a backend that needs it to play a model (``fake``) declares
    ``ReadsGroundTruth`` and is handed it separately.

    Attributes:
        doc_id: The document's id.
        text: Page text from the variant's OCR engine ("" for backends that read images).
        path: The document's location (a local path or a URI); read pixels from ``images``.
        images: Page images as PNG bytes, in page order (empty unless the variant reads images).
    """

    doc_id: str
    text: str
    path: str
    images: tuple[bytes, ...] = ()


@dataclass
class Extraction:
    """A backend's answer for one document.

    Attributes:
        fields: Value per requested field (None where absent).
        raw_output: What the model produced, answer prefix included.
        parse_error: Why the raw output was not a usable JSON object (None if it was).
        tokens_in: Prompt tokens.
        tokens_out: Generated tokens.
        cost: Money this answer cost (served backends with a price), else None.
        fallback_fields: Fields whose value came from the fallback instead of the model.
        error: Set when the backend produced nothing usable for this document.
    """

    fields: dict[str, str | None]
    raw_output: str = ""
    parse_error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    fallback_fields: list[str] = field(default_factory=list)
    error: str | None = None


class Backend(Protocol):
    """The interface of ``invoicelab.backends.REGISTRY`` entries."""

    uses_prompt: bool

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None, seed: int,
                 device: str = "cpu"):
        """Load the model once, on ``device`` (``"cpu"``, or ``"cuda"``: the GPU Ray assigned to the actor)."""

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        """One Extraction per document, in order. May raise; the caller turns that into error rows."""
        ...

    def info(self) -> dict[str, Any]:
        """What was really loaded (model, precision, dtypes, memory), for the results."""
        ...


def extraction(text: str, tokens_in: int, tokens_out: int, prefix: str, fields: list[str]) -> Extraction:
    """A generated answer as an ``Extraction``: the fields parsed from ``prefix + text``, and the token counts."""
    parsed = parse_fields(text, fields, prefix=prefix)
    return Extraction(fields=dict(parsed.fields), raw_output=prefix + text, parse_error=parsed.error,
                      tokens_in=int(tokens_in), tokens_out=int(tokens_out),
                      error=f"unparseable model output: {parsed.error}" if parsed.error else None)


@runtime_checkable
class ReadsGroundTruth(Protocol):
    """A backend that is given the ground truth (the ``fake`` backend only): its own channel, apart from inputs."""

    def see_truth(self, truth: dict[str, dict[str, str | None]]) -> None:
        """Ground truth per doc id and field, for the documents of the next ``extract`` call."""


@runtime_checkable
class CountsTokens(Protocol):
    """A backend that can count its prompts' tokens before generating (to group documents by length)."""

    def prompt_tokens(self, docs: list[DocInput], prompt: Prompt) -> list[int]:
        """Prompt tokens of each document's input for ``prompt``, as the model will see them."""

