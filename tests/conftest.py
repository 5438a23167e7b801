"""Shared fixtures: one local Ray cluster per test session, a private cache, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Each test session gets its own cache (models, OCR text, synthetic data), as a fresh machine would.

    Set INVOICELAB_TEST_CACHE to reuse one between sessions while developing.
    """
    os.environ["INVOICELAB_CACHE"] = os.environ.get("INVOICELAB_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The S3 test server's credentials, set before the session's Ray cluster starts so that its workers
    # inherit them: secrets are never passed to workers through a runtime env (the state API shows those).
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    yield Path(os.environ["INVOICELAB_CACHE"])


@pytest.fixture(scope="session")
def ray_cluster(private_cache):
    """A local 2-CPU Ray cluster shared by every test that needs one (ray.init costs seconds)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"INVOICELAB_CACHE": str(private_cache), "HF_HUB_OFFLINE": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server mode) on 127.0.0.1 for the session; yields its endpoint URL.

    Sets AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION (and turns
    the EC2 metadata lookup off) in this process, so ``invoicelab.data.storage`` and boto3 use it;
    processes started before this fixture (a Ray cluster) need them passed in their environment.
    """
    server_module = pytest.importorskip("moto.server", reason="moto[server] is a dev extra: pip install -e '.[dev]'")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
