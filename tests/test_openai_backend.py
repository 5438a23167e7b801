"""The openai-http backend against real HTTP servers on 127.0.0.1.

- Fault servers (``tests/openai_servers.py``, stdlib ``http.server``): usage and cost, 500s retried,
  429 then success, a hang past the timeout, a dropped connection, ``response_format`` ignored or
  refused, page images as data URLs, the key sent and redacted. Each runs the variant through the
  plain ``Extractor`` loop, the code a Ray actor wraps, so the rows are the rows a run writes.
- ``transformers serve`` (Hugging Face's OpenAI-compatible server, CPU) serving the bundled model:
  real token usage, and a server without ``response_format`` detected (model tier).
- A planted key through a whole run on a Ray head of the test's own: not in the run's folder, the
  CLI's output, Ray's session logs or the state API (ray tier).
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from invoicelab.actors.extractor import Extractor
from invoicelab.config import Experiment, parse_experiment
from invoicelab.prompts import Prompt, load_prompt
from openai_servers import USAGE, ChatServer, free_ports, stop, wait_for

pytest.importorskip("openai", reason="the openai-http backend needs the openai client: pip install -e '.[openai]'")

BIN = Path(sys.executable).parent
FIELDS = {"invoice_number": "id", "total": "amount"}
PRICE_IN, PRICE_OUT = 0.5, 2.0  # per million tokens
PROMPT = load_prompt("terse-json")
FEWSHOT = load_prompt("fewshot-json")  # SmolLM2-135M answers in JSON only after a worked example


def experiment(base_url: str, **variant) -> Experiment:
    return parse_experiment({
        "name": "served", "dataset": {"source": "synthetic", "n": 3}, "fields": FIELDS,
        "variants": [{"name": "served", "backend": "openai-http", "base_url": base_url, "model": "m",
                      "price_in_per_m": PRICE_IN, "price_out_per_m": PRICE_OUT, **variant}],
    })


def pages(n: int, images: list[bytes] | None = None) -> pa.Table:
    rows = [{"doc_id": f"d{i}", "path": f"/nowhere/d{i}.png", "error": "", "doc_sha256": f"{i:064x}",
             "text": f"INVOICE\nInvoice No: INV-10{i}\nTotal due: 1{i}.50 EUR",
             "fields_json": json.dumps({"invoice_number": f"INV-10{i}", "total": f"1{i}.50"}), "normalized_json": "{}",
             "images_png": images} for i in range(n)]
    return pa.Table.from_pylist(rows)


def run(exp: Experiment, n: int = 3, images: list[bytes] | None = None, prompt: Prompt = PROMPT) -> list[dict]:
    """The variant's result rows for ``n`` documents, as a Ray actor of its pool would compute them."""
    extractor = Extractor(exp.model_dump_json(), "served", {prompt.id: asdict(prompt)})
    return extractor(pages(n, images), [(f"d{i}", prompt.id, f"k{i}") for i in range(n)]).to_pylist()


def once_each(rows: list[dict], n: int) -> bool:
    return sorted(r["doc_id"] for r in rows) == [f"d{i}" for i in range(n)]


# --- fault servers ------------------------------------------------------------------------------


def test_answers_carry_token_usage_and_its_cost():
    with ChatServer() as server:
        rows = run(experiment(server.base_url))
    assert once_each(rows, 3) and all(r["error"] is None for r in rows)
    cost = (PRICE_IN * USAGE["prompt_tokens"] + PRICE_OUT * USAGE["completion_tokens"]) / 1e6
    for row in rows:
        assert (row["tokens_in"], row["tokens_out"]) == (USAGE["prompt_tokens"], USAGE["completion_tokens"])
        assert row["cost"] == pytest.approx(cost)
        assert row["pred_invoice_number"] == "INV-7" and row["pred_total"] == "12.50"
    info = json.loads(rows[0]["backend_info"])
    assert info["structured_supported"] is True and info["server_model"] == "served/m"
    # the documents' requests asked for the fields' JSON schema (after the one probe)
    asked = [r.body["response_format"]["json_schema"] for r in server.requests[1:]]
    assert len(asked) == 3 and all(set(a["schema"]["properties"]) == set(FIELDS) for a in asked)


def test_requests_in_flight_stay_within_the_concurrency_limit():
    with ChatServer(hang_s=1.0) as server:  # each answer takes a second, so requests overlap
        rows = run(experiment(server.base_url, structured="none", concurrency=2), n=6)
    assert once_each(rows, 6) and all(r["error"] is None for r in rows)
    assert server.peak_in_flight == 2


def test_a_server_answering_500_is_retried_then_each_document_is_an_error_row():
    with ChatServer(status=500) as server:
        rows = run(experiment(server.base_url, structured="none", max_retries=3))
    assert once_each(rows, 3)
    assert len(server.requests) == 3 * (1 + 3)  # each document: the request and its 3 retries
    assert all("HTTP 500 after 3 retries" in r["error"] and r["error_stage"] == "model" for r in rows)
    assert all(r["cost"] is None and r["pred_total"] is None for r in rows)


def test_a_429_then_an_answer_is_retried_into_an_answer():
    with ChatServer(status=429, fail_first=2) as server:
        rows = run(experiment(server.base_url, structured="none", max_retries=3, concurrency=1), n=1)
    assert once_each(rows, 1) and rows[0]["error"] is None and rows[0]["pred_invoice_number"] == "INV-7"
    assert len(server.requests) == 3


def test_a_server_hanging_past_the_timeout_gives_error_rows_not_a_hang():
    start = time.monotonic()
    with ChatServer(hang_s=120) as server:
        rows = run(experiment(server.base_url, structured="none", timeout_s=0.5, max_retries=1))
    assert time.monotonic() - start < 60  # far below the 120 s hang: the client gave up, the run went on
    assert once_each(rows, 3)
    assert all("timed out (timeout_s=0.5) after 1 retries" in r["error"] for r in rows)
    assert len(server.requests) == 3 * 2


def test_a_dropped_connection_is_an_error_row_with_the_reason():
    with ChatServer(close=True) as server:
        rows = run(experiment(server.base_url, structured="none", max_retries=1))
    assert once_each(rows, 3)
    assert all("connection failed after 1 retries" in r["error"] and "disconnected" in r["error"] for r in rows)


@pytest.mark.parametrize("behaviour", ["ignore", "reject"])
def test_a_server_without_response_format_is_named_in_every_row(behaviour):
    with ChatServer(schema=behaviour, free_text="Hello! The total is 12.50.") as server:
        rows = run(experiment(server.base_url, structured="json-schema", if_unsupported="error"))
    assert once_each(rows, 3)
    for row in rows:
        assert "does not implement response_format" in row["error"] and "if_unsupported: prompt" in row["error"]
    info = json.loads(rows[0]["backend_info"])
    assert info["structured_supported"] is False and info["structured_mode"] == "unsupported"
    assert all(r.body["messages"] == [{"role": "user", "content": "Reply with the word hello."}]
               for r in server.requests)  # only the probe: no document was sent in vain


@pytest.mark.parametrize("behaviour", ["ignore", "reject"])
def test_without_response_format_the_prompt_asks_for_json_and_the_answer_is_parsed(behaviour):
    with ChatServer(schema=behaviour) as server:
        rows = run(experiment(server.base_url, structured="json-schema", if_unsupported="prompt"))
    assert once_each(rows, 3) and all(r["error"] is None and r["pred_total"] == "12.50" for r in rows)
    assert json.loads(rows[0]["backend_info"])["structured_mode"] == "prompt"
    documents = [r.body for r in server.requests if "Invoice No" in json.dumps(r.body)]
    assert len(documents) == 3 and not any("response_format" in body for body in documents)
    assert all('Begin your answer with {"invoice_number":' in body["messages"][-1]["content"] for body in documents)


def test_page_images_travel_as_png_data_urls():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buf, format="PNG")
    png = buf.getvalue()
    with ChatServer() as server:
        rows = run(experiment(server.base_url, input="image", structured="none"), n=1, images=[png, png])
    assert rows[0]["error"] is None
    [body] = [r.body for r in server.requests]
    parts = body["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert base64.b64decode(urls[0].split(",", 1)[1]) == png
    assert "INV-100" not in json.dumps(body)  # image input: no OCR text in the prompt


def test_the_key_is_sent_as_bearer_and_redacted_when_the_server_echoes_it(monkeypatch):
    key = "sk-unit-" + secrets.token_hex(12)
    monkeypatch.setenv("INVOICELAB_TEST_KEY", key)
    echo = lambda body, headers: {"invoice_number": headers["authorization"], "total": "12.50"}  # noqa: E731
    with ChatServer(answer=echo) as server:
        rows = run(experiment(server.base_url, api_key_env="INVOICELAB_TEST_KEY"), n=2)
    assert all(r.headers["authorization"] == f"Bearer {key}" for r in server.requests)
    assert rows[0]["pred_invoice_number"] == "Bearer ***"
    assert key not in json.dumps(rows, default=str)


def test_a_key_variable_missing_on_the_worker_makes_load_error_rows_naming_it(monkeypatch):
    monkeypatch.delenv("INVOICELAB_ABSENT_KEY", raising=False)
    with ChatServer() as server:
        rows = run(experiment(server.base_url, api_key_env="INVOICELAB_ABSENT_KEY"))
    assert once_each(rows, 3) and not server.requests
    assert all(r["error_stage"] == "load" and "INVOICELAB_ABSENT_KEY" in r["error"] for r in rows)


# --- transformers serve, the bundled model ------------------------------------------------------


@pytest.fixture(scope="module")
def served_model(private_cache, tmp_path_factory):
    """`transformers serve <the bundled model's folder>` on a free port of 127.0.0.1; yields (base_url, model)."""
    for module in ("fastapi", "uvicorn"):
        pytest.importorskip(module, reason="`transformers serve` needs pip install 'transformers[serving]' (dev extra)")
    from invoicelab.backends.models import ModelSourceError, resolve_model

    try:
        folder = resolve_model("smollm2-135m-instruct")
    except ModelSourceError as err:
        pytest.skip(str(err))
    [port] = free_ports(1)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # One OpenMP thread: on a busy 2-core machine torch's spinning threads made one 16-token answer take
    # 87 s instead of 2.5 s.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "transformers"), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--log-level", "warning"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", proc, log, 300, "`transformers serve`")
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        stop(proc)


SERVED = {"max_retries": 0, "timeout_s": 900, "concurrency": 1, "generation": {"max_new_tokens": 24}}
"""A CPU server on a busy 2-core machine: one request at a time, no retry of a slow generation."""


@pytest.mark.model
def test_transformers_serve_without_response_format_makes_error_rows_naming_it(served_model):
    base_url, folder = served_model
    rows = run(experiment(base_url, model=folder, if_unsupported="error", **SERVED), n=2)
    assert once_each(rows, 2)
    assert all("does not implement response_format" in r["error"] for r in rows)
    info = json.loads(rows[0]["backend_info"])
    assert info["structured_supported"] is False and "ignored response_format" in info["structured_probe"]
    assert info["server_model"].startswith(folder)  # the id the server reported


@pytest.mark.model
def test_transformers_serve_answers_with_usage_cost_and_parsed_json_when_asked_in_the_prompt(served_model):
    base_url, folder = served_model
    rows = run(experiment(base_url, model=folder, if_unsupported="prompt", **SERVED), n=2, prompt=FEWSHOT)
    assert once_each(rows, 2)
    for row in rows:
        assert row["error"] is None or row["error"].startswith("unparseable model output"), row["error"]
        assert row["tokens_in"] > 50 and 0 < row["tokens_out"] <= 24  # the server's own usage counts
        assert row["cost"] == pytest.approx((PRICE_IN * row["tokens_in"] + PRICE_OUT * row["tokens_out"]) / 1e6)
        assert row["raw_output"]
    assert any(r["parse_error"] is None for r in rows)  # the JSON asked for in words came back as JSON
    assert json.loads(rows[0]["backend_info"])["structured_mode"] == "prompt"


# --- a planted key through a whole run, on a Ray head of this module's own ----------------------

KEY_ENV = "INVOICELAB_PLANTED_KEY"


@dataclass
class KeyedHead:
    """A running head node whose processes hold a planted key in their environment, as a node's would."""

    address: str  # GCS address, for `invoicelab run --address`
    dashboard: str  # http://127.0.0.1:<port>: the state API
    root: Path  # its --temp-dir (session logs) and `ray start` log
    key: str


@pytest.fixture(scope="module")
def keyed_head():
    """`ray start --head --block` on private ports and temp dir, the key in its environment; stopped by process.

    A head of its own rather than the session's shared cluster: workers inherit the environment of
    the process that started Ray (an ``os.environ`` change after that never reaches them), its
    session logs hold this run only, and its dashboard serves the state API. Never `ray stop`.
    """
    key = "sk-planted-" + secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="il-oai-", dir="/tmp"))  # short: Ray's unix socket paths are length-limited
    gcs, dash, metrics, client, agent, agent_grpc, env_agent = free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({KEY_ENV: key, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                "HF_HUB_OFFLINE": "1"})
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--metrics-export-port={metrics}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}", "--num-cpus=2",
           f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    log = root / "ray-start.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{dash}/api/version", proc, log, 180, "`ray start --head`")
        yield KeyedHead(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", root, key)
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _holding(needle: str, roots: list[Path]) -> list[str]:
    """Files under ``roots`` whose bytes, or whose Parquet values once decompressed, contain ``needle``."""
    hits, raw = [], needle.encode()
    for root in roots:
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue  # unix sockets, pipes
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if raw in data or (path.suffix == ".parquet" and needle in json.dumps(pq.read_table(path).to_pylist(),
                                                                                   default=str)):
                hits.append(str(path))
    return hits


def _ray_state(dashboard: str) -> str:
    """Everything the state API lists about the cluster, as text."""
    from ray.util import state

    kw = {"address": dashboard, "detail": True, "limit": 10_000, "raise_on_missing_output": False}
    listed = {name: getattr(state, f"list_{name}")(**kw) for name in
              ("actors", "tasks", "jobs", "workers", "nodes", "runtime_envs", "placement_groups")}
    return json.dumps({k: [repr(x) for x in v] for k, v in listed.items()})


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_planted_key_reaches_the_server_and_appears_nowhere_else(keyed_head, tmp_path, monkeypatch):
    head = keyed_head
    out = tmp_path / "runs"
    config = {
        "name": "secret", "output_dir": str(out / "{name}"), "dataset": {"source": "synthetic", "n": 3},
        "fields": FIELDS, "prompts": [PROMPT.id], "page_stage": {"num_cpus": 0.5},
        "variants": [{"name": "served", "backend": "openai-http", "base_url": "", "model": "m",
                      "api_key_env": KEY_ENV, "ocr": {"engine": "none"}, "batch_size": 2,
                      "price_in_per_m": PRICE_IN, "price_out_per_m": PRICE_OUT, "resources": {"num_cpus": 0.5}}],
    }
    # A server that echoes the Authorization header into its answer: the key would reach the results
    # through raw_output and pred_invoice_number were it not redacted.
    echo = lambda body, headers: {"invoice_number": headers.get("authorization", ""), "total": "12.50"}  # noqa: E731
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({KEY_ENV: head.key, "RAY_AUTH_MODE": "disabled"})  # the driver has the key too, as a local run's has
    with ChatServer(answer=echo) as server:
        config["variants"][0]["base_url"] = server.base_url
        path = tmp_path / "secret.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        done = subprocess.run([str(BIN / "invoicelab"), "run", str(path), "--address", head.address], env=env,
                              capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    # the key reached the server, from the workers' own environment
    assert server.requests and all(r.headers["authorization"] == f"Bearer {head.key}" for r in server.requests)
    rows = [row for part in out.rglob("*.parquet") for row in pq.read_table(part).to_pylist()]
    assert sorted(r["doc_id"] for r in rows) == sorted({r["doc_id"] for r in rows}) and len(rows) == 3
    assert all(r["error"] is None and r["pred_invoice_number"] == "Bearer ***" for r in rows)  # echoed, redacted
    # ... and nowhere else: results, summaries and logs of the run, the CLI's output, Ray's session folder
    assert list((head.root / "ray").rglob("*.log")), "no Ray session logs to search"
    assert _holding(head.key, [out, head.root]) == []
    assert head.key not in output
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    state = _ray_state(head.dashboard)
    assert "VariantActor" in state and "served" in state  # it does list this run's actors
    assert head.key not in state
