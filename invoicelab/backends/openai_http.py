"""The openai-http backend: a model already served behind an OpenAI-compatible API.

Any server that speaks ``POST /v1/chat/completions`` (vLLM, SGLang, TGI, llama.cpp, Ollama,
``transformers serve``, a hosted API) is called through the official ``openai`` client, one request
per document, at most ``concurrency`` in flight per actor (a thread pool), each bounded by
``timeout_s`` and retried ``max_retries`` times with the client's exponential backoff (0.5 s doubling
to 8 s, with jitter, ``Retry-After`` honoured) on 408/409/429/5xx, timeouts and dropped connections.
Every document comes back exactly once: answered, or an error row naming the cause (the HTTP status
and the server's message, "timed out", "connection failed: ... disconnected"). A batch also has an
overall deadline, so a server that trickles bytes forever cannot hang it.

Structured output: ``structured: json-schema`` sends ``response_format`` with the fields' JSON schema
(``answer_schema``). Not every server implements it (``transformers serve`` ignores it and answers
free text; others answer 400/422), so one tiny request probes the server at start-up; a server found
without it makes every row an error row saying so (``if_unsupported: error``) or has the JSON asked
for in the prompt and parsed (``if_unsupported: prompt``); ``info()`` records what was found. A chat
API cannot begin the assistant's answer for it, so ``structured: prefix`` becomes an instruction to
begin the answer with the first key; the answer is parsed like any free answer.

The API key: ``api_key_env`` names an environment variable, read here, on the worker, into a
``pydantic.SecretStr`` whose value is taken only to build the client. It is never in ``info()``,
errors, raw outputs or logs (a server that echoes it back is redacted), and never travels in actor
arguments or Ray runtime envs, which the dashboard and the state API show.

Why not Ray Data LLM's ``HttpRequestProcessorConfig`` (Ray 2.60): it is a Ray Data stage with its
own actor pool, whereas a variant here is one of invoicelab's pools calling ``extract`` per batch
(and backends import no Ray); its headers, hence the key, are the stage's constructor arguments;
it retries only 408/429/502/503/504 (not 500) and when retries run out raises for the whole batch,
with the document's payload in the message, instead of one error row per document; it has no
per-request timeout or in-flight limit (only ``qps``) and no notion of ``response_format`` support.

Never imports Ray; the ``openai`` client is imported when the backend is built. What a request
holds and what a failure says (key, errors, cost, the JSON instruction) is in ``openai_requests``.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from invoicelab.backends.base import DocInput, Extraction
from invoicelab.backends.openai_requests import (MISSING_OPENAI, NO_KEY, RETRY_WAIT_BOUND_S, cost_of, describe_error,
                                                 json_instruction, public_url, read_key, response_format, short,
                                                 with_instruction)
from invoicelab.backends.structured import answer_schema
from invoicelab.backends.vllm_engine import with_images
from invoicelab.config import FieldSpec, VariantSpec
from invoicelab.parsing import parse_fields
from invoicelab.prompts import Prompt

PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                "additionalProperties": False}
PROBE_MESSAGES = [{"role": "user", "content": "Reply with the word hello."}]
"""A server that honours response_format must answer ``{"ok": ...}``; one that ignores it says hello."""
PROBE_TOKENS = 16


@dataclass
class Support:
    """What the start-up probe found about ``response_format``.

    Attributes:
        supported: True, False, or None when the probe could not tell (the server did not answer).
        detail: What the probe saw, for ``info()`` and error rows.
    """

    supported: bool | None = None
    detail: str = "not probed"


class OpenAIBackend:
    """One chat completion per document from an OpenAI-compatible server, several in flight at once."""

    uses_prompt = True

    def __init__(self, variant: VariantSpec, fields: dict[str, FieldSpec], num_threads: int | None = None,
                 seed: int = 0, device: str = "cpu"):
        try:
            import openai
        except ImportError as exc:
            raise ImportError(f"{MISSING_OPENAI} ({exc})") from exc
        self.variant, self.fields, self.seed = variant, fields, seed
        self._key = read_key(variant.api_key_env)
        self.client = openai.OpenAI(base_url=variant.base_url,
                                    api_key=self._key.get_secret_value() if self._key else NO_KEY,
                                    timeout=variant.timeout_s, max_retries=variant.max_retries)
        self.pool = ThreadPoolExecutor(max_workers=variant.concurrency, thread_name_prefix="openai-http")
        self.schema = answer_schema(fields)
        self.server_model: str | None = None
        self.support = Support(detail="not needed (structured is not json-schema)")
        self._probes = 0
        if variant.structured == "json-schema":
            self._probe()

    # --- response_format support ---------------------------------------------------------------

    def _probe(self) -> None:
        """Ask the server one tiny question with ``response_format`` and record whether it was honoured."""
        self._probes += 1
        try:
            asked = {"response_format": response_format("probe", PROBE_SCHEMA)}
            reply = self._create(PROBE_MESSAGES, PROBE_TOKENS, asked)
        except Exception as err:  # noqa: BLE001 - whatever the probe meets is recorded, never raised
            self.support = self._probe_failed(err)
            return
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        if text.lstrip().startswith("{"):
            self.support = Support(True, "the probe's answer followed the JSON schema")
        else:
            self.support = Support(False, f"the server ignored response_format (the probe got free text: "
                                          f"{short(self._redact(text), 80)!r})")

    def _probe_failed(self, err: Exception) -> Support:
        """A probe that failed: unsupported if the same request without ``response_format`` succeeds."""
        import openai

        reason = self._redact(describe_error(err, self.variant.timeout_s, self.variant.max_retries))
        if not (isinstance(err, openai.APIStatusError) and err.status_code in (400, 404, 415, 422)):
            return Support(None, f"probe failed: {reason}")
        try:
            self._create(PROBE_MESSAGES, PROBE_TOKENS, {})
        except Exception:  # noqa: BLE001 - the request fails either way: not about response_format
            return Support(None, f"probe failed: {reason}")
        return Support(False, f"the server refused response_format: {reason}")

    def _mode(self) -> str:
        """How this request's answer is made JSON: json-schema, prompt, prefix, none, or unsupported."""
        if self.variant.structured != "json-schema":
            return self.variant.structured
        if self.support.supported is False:
            return "prompt" if self.variant.if_unsupported == "prompt" else "unsupported"
        return "json-schema"  # supported, or the probe could not tell: a refusal then shows in each row

    def _unsupported(self) -> str:
        return (f"server at {public_url(self.variant.base_url)} does not implement response_format (json_schema): "
                f"{self.support.detail}. Set if_unsupported: prompt (ask for JSON in the prompt) or structured: "
                f"prefix/none in variant {self.variant.name!r}")

    # --- requests --------------------------------------------------------------------------------

    def extract(self, docs: list[DocInput], prompt: Prompt | None) -> list[Extraction]:
        if prompt is None:
            raise ValueError("openai-http needs a prompt")
        if self.support.supported is None and self.variant.structured == "json-schema" and self._probes < 2:
            self._probe()  # the server did not answer at start-up: ask once more
        mode = self._mode()
        if mode == "unsupported":
            return [self._failed(self._unsupported()) for _ in docs]
        futures = [self.pool.submit(self._one, doc, prompt, mode) for doc in docs]
        deadline = self._deadline(len(docs))
        done, _ = wait(futures, timeout=deadline)
        late = f"no answer within the batch deadline of {deadline:.0f} s (the server kept the request open)"
        return [self._result(f) if f in done else self._failed(late) for f in futures]

    def _deadline(self, n: int) -> float:
        """Seconds a batch of ``n`` may take: every request timing out and retrying after the longest wait."""
        v = self.variant
        one = (v.max_retries + 1) * v.timeout_s + v.max_retries * RETRY_WAIT_BOUND_S
        return math.ceil(n / v.concurrency) * one + 5.0

    def _result(self, future: Future) -> Extraction:
        try:
            return future.result()
        except BaseException as err:  # noqa: BLE001 - _one catches Exception; anything else is still one row
            return self._failed(f"{type(err).__name__}: {short(self._redact(str(err)))}")

    def _one(self, doc: DocInput, prompt: Prompt, mode: str) -> Extraction:
        """One document's request and answer; never raises."""
        try:
            messages = self._messages(doc, prompt, mode)
            extra = {"response_format": response_format("invoice_fields", self.schema)} if mode == "json-schema" \
                else {}
            reply = self._create(messages, self.variant.generation.max_new_tokens, extra)
        except Exception as err:  # noqa: BLE001 - a failed request is this document's error row
            return self._failed(self._redact(describe_error(err, self.variant.timeout_s, self.variant.max_retries)))
        return self._extraction(reply)

    def _messages(self, doc: DocInput, prompt: Prompt, mode: str) -> list[dict[str, Any]]:
        """Chat messages: OCR text in the prompt, or the page images as data URLs before its text.

        Raises:
            ValueError: image input but the document has no page image.
        """
        reads_images = self.variant.input == "image"
        if reads_images and not doc.images:
            raise ValueError("no page image to read")
        messages, _prefix = prompt.render(self.fields, "" if reads_images else doc.text[:self.variant.ocr.max_chars])
        if mode in ("prefix", "prompt"):  # a chat API cannot begin the answer: ask for it instead
            messages = with_instruction(messages, json_instruction(self.fields))
        return with_images(messages, doc.images) if reads_images else messages

    def _create(self, messages: list[dict[str, Any]], max_tokens: int, extra: dict[str, Any]) -> Any:
        """One chat completion (the client retries and times out); remembers the model id the server names."""
        gen = self.variant.generation
        if gen.temperature > 0:
            extra = {**extra, "seed": self.seed}
        reply = self.client.chat.completions.create(model=self.variant.model, messages=messages, max_tokens=max_tokens,
                                                    temperature=gen.temperature, top_p=gen.top_p, **extra)
        if self.server_model is None and getattr(reply, "model", None):
            self.server_model = self._redact(str(reply.model))
        return reply

    def _extraction(self, reply: Any) -> Extraction:
        """A completion as an Extraction: parsed fields, token usage and its cost."""
        choice = reply.choices[0] if reply.choices else None
        message = choice.message if choice else None
        text = self._redact((message.content or "") if message else "")
        usage = getattr(reply, "usage", None)
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        parsed = parse_fields(text, list(self.fields))
        error = None
        if message is None:
            error = "the server's answer held no choice"
        elif getattr(message, "refusal", None):
            error = f"the model refused: {short(self._redact(message.refusal))}"
        elif parsed.error:
            cut = " (cut off at max_new_tokens)" if choice.finish_reason == "length" else ""
            error = f"unparseable model output{cut}: {parsed.error}"
        v = self.variant
        return Extraction(fields=dict(parsed.fields), raw_output=text, parse_error=parsed.error, tokens_in=tokens_in,
                          tokens_out=tokens_out, cost=cost_of(tokens_in, tokens_out, v.price_in_per_m,
                                                              v.price_out_per_m), error=error)

    def _failed(self, reason: str) -> Extraction:
        return Extraction(fields={f: None for f in self.fields}, error=f"openai-http: {reason}")

    def _redact(self, text: str) -> str:
        """The text with the API key blanked out (a server may echo it back in an error)."""
        secret = self._key.get_secret_value() if self._key else ""
        return text.replace(secret, "***") if secret and text else text

    def info(self) -> dict[str, Any]:
        v = self.variant
        return {
            "backend": "openai-http", "base_url": public_url(v.base_url), "model": v.model,
            "server_model": self.server_model, "input": v.input, "structured": v.structured,
            "structured_supported": self.support.supported, "structured_probe": self.support.detail,
            "structured_mode": self._mode(), "if_unsupported": v.if_unsupported, "concurrency": v.concurrency,
            "timeout_s": v.timeout_s, "max_retries": v.max_retries, "price_in_per_m": v.price_in_per_m,
            "price_out_per_m": v.price_out_per_m, "api_key_env": v.api_key_env, "api_key_set": self._key is not None,
        }
