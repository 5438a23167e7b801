"""Structured output: the JSON schema of an answer, and grammar-constrained decoding for transformers.

``answer_schema`` turns the experiment's fields into one JSON schema (shared by every backend that
constrains its answer: transformers here, vLLM's structured outputs, ``response_format`` of
OpenAI-compatible servers). ``json_logits_processor`` gives a transformers ``LogitsProcessor``
that lets a model write only what the schema allows (xgrammar: one compiled grammar per tokenizer
and schema, one matcher per batch row), and forces an end-of-sequence token once the object is
complete, so generation stops by itself. This module imports no model library at import time
and never imports Ray.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from invoicelab.config import FieldSpec, FieldType

# Values are written as printed, so each type keeps a string; patterns only keep out what cannot be
# the value (a label, a sentence) and bound its length, so that a model repeating itself must close the
# string while tokens are left (xgrammar ignores maxLength beside a pattern: the repetitions are bounded).
_MONEY = r"([A-Za-z]{1,3}|[A-Za-z]{0,2}[$€£¥₹])"  # RM, EUR, $, S$, €
_STRING_RULES: dict[FieldType, dict[str, Any]] = {
    # "1,234.50", "1 234,50", "RM8.35", "$ 99.50", "5,00 €": digit groups joined by one separator, a
    # currency before or after
    FieldType.amount: {"pattern": rf"^({_MONEY} ?)?-?[0-9]{{1,12}}([,.' ][0-9]{{1,3}}){{0,4}}( ?{_MONEY})?$"},
    # dates are printed in many formats ("25/12/2018", "06 JAN 2018", "Dec 5, 2018", "23-06-2018 21:29"):
    # letters, digits and the usual separators, starting with a letter or digit
    FieldType.date: {"pattern": r"^[0-9A-Za-z][0-9A-Za-z ,./:-]{0,23}$"},
    # "INV-2024-0042", "No 12/B": words of letters, digits and #, joined by separators
    FieldType.id: {"pattern": r"^[A-Za-z0-9#]{1,20}([ ./:_-]{1,2}[A-Za-z0-9#]{1,12}){0,3}$"},
    # "EUR", "RM", "$", "S$"
    FieldType.currency: {"pattern": r"^[A-Za-z$€£¥₹]{1,4}$"},
    FieldType.text: {"minLength": 1, "maxLength": 160},
}
_BARE_NUMBER = frozenset({FieldType.amount})
"""Types whose value may also be a JSON number (``"total": 179.50``), as models often write amounts."""


def answer_schema(fields: dict[str, FieldSpec]) -> dict[str, Any]:
    """The JSON schema of an answer: one object holding every field, in field order, each a string or null.

    Amounts may also be JSON numbers; parsing keeps a number's text as written (``179.50``).

    Args:
        fields: The experiment's fields, in order.

    Returns:
        A JSON schema (``type: object``, every field required and nullable, no other property) usable by
        xgrammar, vLLM's structured outputs and OpenAI-style ``response_format``.
    """
    properties = {name: _field_schema(spec) for name, spec in fields.items()}
    return {"type": "object", "properties": properties, "required": list(fields), "additionalProperties": False}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    """One field's value: a string shaped by its type (an amount may be a number), or null where absent."""
    string = {"type": "string", **_STRING_RULES[spec.type]}
    if spec.description:
        string["description"] = spec.description
    number = [{"type": "number"}] if spec.type in _BARE_NUMBER else []
    return {"anyOf": [string, *number, {"type": "null"}]}


# tokenizer -> {(vocab size, stop ids): xgrammar GrammarCompiler}; the compiler caches compiled grammars per
# schema itself, and the entry goes when the tokenizer does.
_COMPILERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def grammar_compiler(tokenizer: Any, vocab_size: int, stop_token_ids: list[int] | None = None) -> Any:
    """The xgrammar compiler for a tokenizer, made once per (tokenizer, vocab size, stop tokens).

    Args:
        tokenizer: A transformers tokenizer.
        vocab_size: Rows of the model's output layer (can exceed the tokenizer's vocabulary).
        stop_token_ids: Tokens that end an answer; the grammar allows exactly these after the closing
            brace. None: the tokenizer's end-of-sequence token.

    Raises:
        ImportError: xgrammar is not installed (the message says what to install).
    """
    xgr = _import_xgrammar()
    stops = tuple(sorted(stop_token_ids)) if stop_token_ids else None
    per_tokenizer = _COMPILERS.setdefault(tokenizer, {})
    key = (vocab_size, stops)
    if key not in per_tokenizer:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=list(stops) if stops else None)
        per_tokenizer[key] = xgr.GrammarCompiler(info)
    return per_tokenizer[key]


def compile_schema(tokenizer: Any, schema: dict[str, Any], vocab_size: int,
                   stop_token_ids: list[int] | None = None) -> Any:
    """The schema compiled against the tokenizer (cached): compact JSON, one line, keys in schema order."""
    compiler = grammar_compiler(tokenizer, vocab_size, stop_token_ids)
    # any_whitespace=False: `{"a": "x", "b": null}` exactly, so a small model cannot spend its tokens on blanks
    return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)


def json_logits_processor(tokenizer: Any, schema: dict[str, Any], vocab_size: int,
                          stop_token_ids: list[int] | None = None, prefixes: list[str] | None = None) -> Any:
    """A transformers logits processor that keeps every row of a ``generate`` call inside ``schema``.

    Use a new one for each ``generate`` call (it keeps one grammar matcher per batch row). Pass the same
    ``stop_token_ids`` as ``generate``'s ``eos_token_id``, so that the end-of-sequence token the grammar
    forces after the closing brace is the one that stops the row.

    Args:
        tokenizer: The model's transformers tokenizer.
        schema: A JSON schema (e.g. ``answer_schema(fields)``).
        vocab_size: Rows of the model's output layer (``model.get_output_embeddings().weight.shape[0]``).
        stop_token_ids: End-of-sequence ids (default: the tokenizer's).
        prefixes: Per batch row, the answer's beginning already in the prompt (``'{"total": "'``); the
            model continues it within the schema. None: every answer starts from nothing.

    Returns:
        A ``transformers.LogitsProcessor`` for ``generate(logits_processor=[...])``.

    Raises:
        ValueError: a prefix that no answer of the schema begins with.
    """
    compiled = compile_schema(tokenizer, schema, vocab_size, stop_token_ids)
    return _processor_class()(compiled, vocab_size, prefixes)


_PROCESSOR_CLASS: list[type] = []


def _processor_class() -> type:
    """The processor class, defined on first use so that importing this module imports no torch."""
    if _PROCESSOR_CLASS:
        return _PROCESSOR_CLASS[0]
    import torch
    from transformers import LogitsProcessor

    xgr = _import_xgrammar()

    class GrammarLogitsProcessor(LogitsProcessor):
        """Masks each row's logits to the tokens its grammar matcher allows next.

        Unlike ``xgrammar.contrib.hf.LogitsProcessor`` it reads the last tokens of the whole batch in one
        device-to-host copy per step (not one per row) and fills the rows' masks in parallel threads.
        """

        def __init__(self, compiled: Any, vocab_size: int, prefixes: list[str] | None = None):
            self.compiled, self.vocab_size = compiled, vocab_size
            self.matchers: list[Any] = []
            self.prefilled = False
            self.batch = xgr.BatchGrammarMatcher(max_threads=max(1, torch.get_num_threads()))
            if prefixes is not None:
                self._start(prefixes)

        def _start(self, prefixes: list[str]) -> None:
            """One matcher per row, each fed its row's answer prefix."""
            self.matchers = [xgr.GrammarMatcher(self.compiled) for _ in prefixes]
            self.bitmask = xgr.allocate_token_bitmask(len(prefixes), self.vocab_size)
            for i, prefix in enumerate(prefixes):
                if prefix and not self.matchers[i].accept_string(prefix):
                    raise ValueError(f"answer prefix {prefix!r} (row {i}) does not begin any answer of the schema")

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if not self.prefilled:  # first step: the prompt only, nothing generated yet
                self.prefilled = True
                if not self.matchers:
                    self._start([""] * input_ids.shape[0])
            else:
                self._accept(input_ids[:, -1].tolist())
            live = [i for i, m in enumerate(self.matchers) if not m.is_terminated()]
            if live:  # a finished row keeps its last mask; generate pads it anyway
                self.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in live], self.bitmask, live)
            xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device, non_blocking=True),
                                            vocab_size=min(self.vocab_size, scores.shape[-1]))
            return scores

        def _accept(self, tokens: list[int]) -> None:
            """Advance each unfinished row's matcher by the token generate chose for it."""
            for i, (matcher, token) in enumerate(zip(self.matchers, tokens)):
                if not matcher.is_terminated() and not matcher.accept_token(token):
                    raise RuntimeError(f"row {i}: token {token} is outside the grammar (vocabulary or stop "
                                       "tokens differ between the grammar and generate)")

    _PROCESSOR_CLASS.append(GrammarLogitsProcessor)
    return GrammarLogitsProcessor


def _import_xgrammar() -> Any:
    """Import xgrammar, naming what to install when it is missing."""
    try:
        import xgrammar
    except ImportError as exc:
        raise ImportError(f"structured: json-schema on transformers needs xgrammar (pip install xgrammar): {exc}") \
            from exc
    return xgrammar
