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
    yield Path(os.environ["INVOICELAB_CACHE"])


@pytest.fixture(scope="session")
def ray_cluster(private_cache):
    """A local 2-CPU Ray cluster shared by every test that needs one (ray.init costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"INVOICELAB_CACHE": str(private_cache), "HF_HUB_OFFLINE": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
