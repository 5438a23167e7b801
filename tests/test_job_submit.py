"""Cluster submission as a user does it: a real `ray start --head` with token auth, `ray job submit`.

One head per module, started by the fixture below with Ray's own CLI from this interpreter's venv:
dashboard and Jobs API on 127.0.0.1, token authentication on, a private --temp-dir and private ports
so it never meets another Ray instance on the machine. The quickstart is submitted through
`ray job submit --working-dir .` with the fake backend (instant), its results are read back from
the Parquet it wrote, and the state API and the Prometheus endpoint are asked what ran.

Never calls `ray stop`: that kills every Ray process of the machine it can signal, other people's
included. Teardown ends only the processes this fixture started.

How Ray 2.60 token auth works (from ray/_private/authentication and the C++ token loader):
- RAY_AUTH_MODE=token in the environment of every `ray start` and of every client turns it on; a
  client whose mode is not `token` sends no token at all, even if it has one.
- The token is read from RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else
  ~/.ray/auth_token (`ray get-auth-token --generate` writes that one). `ray start` never generates
  it: a token must exist before the head starts.
- HTTP clients send `Authorization: Bearer <token>`; without it the dashboard answers 401
  "Unauthorized: Missing authentication token", with a wrong one 403.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest
import requests
import yaml
from openai_servers import free_ports

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: its `ray` starts the head, its `invoicelab` runs the job
CONFIG = "configs/quickstart.yaml"
N_DOCS = 4
# The upload limit of --working-dir is Ray's GCS object size; name what must never travel rather
# than trusting each user's .gitignore (Ray 2.60 skips .git and .venv by default, not runs/).
EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info"]


@dataclass
class Head:
    """A running head node and what a client needs to reach it."""

    dashboard: str  # http://127.0.0.1:<port>: dashboard, Jobs API, state API
    metrics: str  # http://127.0.0.1:<port>/metrics: this node's Prometheus endpoint
    token_path: Path
    home: Path  # an empty HOME for clients, so no ~/.ray/auth_token of the user is picked up

    def client_env(self, with_token: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["HOME"] = str(self.home)
        if with_token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return env

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_path.read_text()}"}

    def ray(self, *args: str, with_token: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run Ray's CLI as a user on another machine would: only the environment says where the token is."""
        return subprocess.run([str(BIN / "ray"), *args], cwd=REPO, env=self.client_env(with_token),
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def head():
    """`ray start --head --block` with token auth, private ports and temp dir; stopped by process, not `ray stop`."""
    # A short private root: Ray puts unix sockets under --temp-dir and those paths are length-limited.
    root = Path(tempfile.mkdtemp(prefix="il-head-", dir="/tmp"))
    token_path = root / "auth_token"
    token_path.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    token_path.chmod(0o600)
    home = root / "home"
    home.mkdir()
    gcs, dash, metrics, client, agent, agent_grpc, env_agent = free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `invoicelab` and `python` are the venv's
        INVOICELAB_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1",
        RAY_metrics_report_interval_ms="1000",  # workers push metrics every second instead of every 10
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM stops the node now, not after a 30 s drain
    )
    # Ray 2.60 replaces a loopback --node-ip-address by the machine's routable address
    # (services.resolve_ip_for_localhost), so GCS and raylet listen on every interface, guarded by the
    # token; the dashboard (Jobs API) is the part that --dashboard-host keeps on 127.0.0.1.
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={env_agent}", "--num-cpus=2", f"--temp-dir={root / 'ray'}",
           "--disable-usage-stats"]
    log = (root / "ray-start.log").open("w")
    # --block keeps `ray start` in the foreground as the parent of every process of this node, so
    # SIGTERM to it stops exactly this head; a session of its own keeps pytest's signals away from it.
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node = Head(f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{metrics}/metrics", token_path, home)
    try:
        _wait_until_ready(node, proc, root / "ray-start.log")
        yield node
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(node: Head, proc: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    """The Jobs API answers an authenticated request (the dashboard starts last, seconds after GCS)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`ray start --head` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{node.dashboard}/api/version", headers=node.auth_header(), timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"head not ready after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the blocking `ray start` (it kills its node's processes), then kill what it left behind.

    Detached actors and the dashboard's forked modules are re-parented when their parent dies, so
    they are listed before the signal, while they are still this process's descendants.
    """
    try:
        started = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(started, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@dataclass
class Job:
    submission_id: str
    out_dir: Path
    output: str  # what `ray job submit` printed: the driver's log, tailed
    experiment: str
    variants: list[str]
    prompts: list[str]


@pytest.fixture(scope="module")
def quickstart_job(head, tmp_path_factory) -> Job:
    """`ray job submit --working-dir . -- invoicelab run configs/quickstart.yaml`, fake backend, 4 documents."""
    config = yaml.safe_load((REPO / CONFIG).read_text())
    out_root = tmp_path_factory.mktemp("job-out")
    overrides = [f"dataset.n={N_DOCS}", f"output_dir={out_root}/{{name}}"]
    # Each variant replaced by a fake one of the same name (a fake variant takes no model settings).
    overrides += [f"variants.{i}={{name: {v['name']}, backend: fake}}" for i, v in enumerate(config["variants"])]
    submission_id = f"invoicelab-test-{secrets.token_hex(4)}"
    # The driver runs on the head and writes results to output_dir there, which is this machine.
    # No env_vars in the job's runtime env: invoicelab's ray.init passes INVOICELAB_CACHE & co. itself,
    # and Ray refuses to merge a job and a driver runtime env that set the same variable.
    done = head.ray("job", "submit", "--address", head.dashboard, "--submission-id", submission_id,
                    "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
                    "--", "invoicelab", "run", CONFIG, *[a for o in overrides for a in ("--set", o)],
                    timeout=150)
    assert done.returncode == 0, f"ray job submit failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return Job(submission_id, out_root / config["name"], done.stdout + done.stderr, config["name"],
               [v["name"] for v in config["variants"]], list(config["prompts"]))


def read_results(out_dir: Path) -> pd.DataFrame:
    """The run's result table: a Parquet dataset folder `results/`, or the older single `results.parquet`."""
    folder = out_dir / "results"
    return pd.read_parquet(folder if folder.is_dir() else out_dir / "results.parquet")


def test_submitted_quickstart_succeeds_with_each_document_once_per_variant_and_prompt(head, quickstart_job):
    info = requests.get(f"{head.dashboard}/api/jobs/{quickstart_job.submission_id}",
                        headers=head.auth_header(), timeout=10).json()
    assert info["status"] == "SUCCEEDED", info.get("message")
    df = read_results(quickstart_job.out_dir)
    assert set(df["variant"]) == set(quickstart_job.variants)
    docs = set(df["doc_id"])
    assert len(docs) == N_DOCS
    for (variant, prompt), group in df.groupby(["variant", "prompt"]):
        assert sorted(group["doc_id"]) == sorted(docs), f"{variant}/{prompt}: not every document exactly once"
    assert set(df["prompt"]) == set(quickstart_job.prompts)  # the fake backend uses the prompts


def test_jobs_api_refuses_a_client_without_the_token(head):
    refused = head.ray("job", "submit", "--address", head.dashboard, "--no-wait", "--", "echo", "pwned",
                       with_token=False)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stdout + refused.stderr
    assert requests.get(f"{head.dashboard}/api/jobs/", timeout=10).status_code == 401
    assert requests.get(f"{head.dashboard}/api/jobs/", headers={"Authorization": "Bearer not-the-token"},
                        timeout=10).status_code == 403
    listed = requests.get(f"{head.dashboard}/api/jobs/", headers=head.auth_header(), timeout=10)
    assert listed.ok
    assert not any("pwned" in (job.get("entrypoint") or "") for job in listed.json())


def test_job_with_the_token_runs_on_the_venvs_python(head):
    done = head.ray("job", "submit", "--address", head.dashboard, "--",
                    "python", "-c", "import sys; print('interpreter:', sys.executable)")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"interpreter: {BIN / 'python'}" in done.stdout


def variant_pools(actors: list[dict], experiment: str) -> dict[str, set[str]]:
    """Actor names `<experiment>/<variant>/<index>[#<run id>]` grouped by variant (the page stage is not one).

    The name is read from the actor's registered `name` and from its `repr_name` (its __repr__), so
    either way of labelling an actor for the dashboard counts.
    """
    pools: dict[str, set[str]] = {}
    for actor in actors:
        for label in {actor.get("name") or "", actor.get("repr_name") or ""}:
            parts = label.split("#")[0].split("/")
            if len(parts) == 3 and parts[0] == experiment and parts[1] != "pages" and parts[2].isdigit():
                pools.setdefault(parts[1], set()).add(label)
    return pools


def test_state_api_lists_one_actor_pool_per_variant(head, quickstart_job):
    listed = head.ray("list", "actors", "--address", head.dashboard, "--format", "json", "--detail",
                      "--limit", "10000")
    assert listed.returncode == 0, listed.stderr[-3000:]
    actors = json.loads(listed.stdout)
    named = [a for a in actors if f"{quickstart_job.experiment}/" in (a.get("name") or "") + (a.get("repr_name") or "")]
    if not named:
        pytest.skip(f"no actor is named '{quickstart_job.experiment}/<variant>/<index>' yet "
                    f"(classes seen: {sorted({a['class_name'] for a in actors})})")
    pools = variant_pools(actors, quickstart_job.experiment)
    assert set(pools) == set(quickstart_job.variants), (pools, [a.get("name") for a in named])


def test_prometheus_endpoint_has_documents_done_per_variant(head, quickstart_job):
    from prometheus_client.parser import text_string_to_metric_families

    # Workers push to the node's metrics agent every RAY_metrics_report_interval_ms (1 s here), and
    # Ray prefixes application metrics with `ray_` (a counter also gets `_total`): poll, bounded.
    deadline, text = time.monotonic() + 6, ""
    while time.monotonic() < deadline:
        text = requests.get(head.metrics, timeout=5).text
        if "invoicelab_documents_done" in text:
            break
        time.sleep(1)
    else:
        pytest.skip("no invoicelab_documents_done metric exported yet (ray.util.metrics Counter, tags "
                    "experiment and variant)")
    done: dict[str, float] = {}  # per variant, summed over the workers that reported it
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name.removesuffix("_total"), sample.labels
            if name.endswith("invoicelab_documents_done") and labels.get("experiment") == quickstart_job.experiment:
                done[labels["variant"]] = done.get(labels["variant"], 0) + sample.value
    assert set(done) == set(quickstart_job.variants), done
    assert all(v > 0 for v in done.values()), done
