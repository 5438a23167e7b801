"""What goes on the wire to an OpenAI-compatible server, and what a failed request says.

Pure helpers of the openai-http backend (``invoicelab.backends.openai_http``): the API key read from
the worker's environment into a ``SecretStr``, the base URL without credentials, the JSON asked for
in words where a chat API cannot begin the answer, ``response_format`` for a JSON schema, an error
row's reason for each kind of failure, and an answer's cost. Imports neither Ray nor (until an
error is described) the ``openai`` client, and never returns or logs a key.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from invoicelab.config import FieldSpec

MISSING_OPENAI = "the openai-http backend needs the openai client: pip install 'invoicelab[openai]'"
NO_KEY = "EMPTY"
"""Sent when a variant names no key (vLLM's convention); the client would otherwise read OPENAI_API_KEY itself."""
RETRY_WAIT_BOUND_S = 120.0
"""The longest wait the openai client makes before a retry (a server's ``Retry-After``, capped at 2 minutes)."""
_CODE_PREFIX = re.compile(r"^Error code: \d+ - ")
"""The openai client's own prefix of a status error's message; the reason names the status already."""
JSON_INSTRUCTION = "\n\nAnswer with one JSON object only, with the keys {keys}. Begin your answer with {start}"


def read_key(env_name: str | None) -> SecretStr | None:
    """The API key from this process's environment (None when the variant names no key).

    Raises:
        RuntimeError: the variable is not set here (the message says where to set it, never a value).
    """
    if env_name is None:
        return None
    value = os.environ.get(env_name, "")
    if not value:
        raise RuntimeError(
            f"environment variable {env_name} (api_key_env) is not set on worker {socket.gethostname()}: set it "
            "where Ray's worker processes start (for a local run, in the shell that runs invoicelab; on a cluster, "
            "in each node's environment before `ray start`). Keys are never sent in a Ray runtime_env, which the "
            "dashboard and state API show.")
    return SecretStr(value)


def public_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe_error(err: BaseException, timeout_s: float, max_retries: int) -> str:
    """An error row's reason for a failed request: the HTTP status, a timeout or the dropped connection."""
    import openai

    retried = f" after {max_retries} retries" if max_retries else ""
    if isinstance(err, openai.APITimeoutError):
        return f"request timed out (timeout_s={timeout_s:g}){retried}"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__
        return f"connection failed{retried}: " + (f"{type(cause).__name__}: {cause}" if cause else str(err))
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        again = retried if code in (408, 409, 429) or code >= 500 else ""
        return f"server answered HTTP {code}{again}: {short(_CODE_PREFIX.sub('', err.message))}"
    return f"{type(err).__name__}: {short(str(err))}"


def short(text: str, limit: int = 300) -> str:
    """The text on one line, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def cost_of(tokens_in: int, tokens_out: int, price_in_per_m: float, price_out_per_m: float) -> float | None:
    """Money for one answer's tokens at prices per million tokens (None when no price is set)."""
    if not price_in_per_m and not price_out_per_m:
        return None
    return (price_in_per_m * tokens_in + price_out_per_m * tokens_out) / 1e6


def json_instruction(fields: dict[str, FieldSpec]) -> str:
    """What replaces an answer prefix (or ``response_format``) on a chat API: the JSON asked for in words."""
    first = next(iter(fields))
    return JSON_INSTRUCTION.format(keys=", ".join(fields), start='{"' + first + '":')


def with_instruction(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The messages with ``text`` appended to the last user message."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [*messages[:last], {**messages[last], "content": messages[last]["content"] + text}, *messages[last + 1:]]


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output request field for a JSON schema."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
