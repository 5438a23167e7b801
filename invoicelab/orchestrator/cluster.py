"""Starting or joining the Ray cluster an experiment runs on."""

from __future__ import annotations

import json
import logging
import os

import ray

from invoicelab.config import RaySpec

_PASSED_ENV = ("INVOICELAB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "AWS_ENDPOINT_URL",
               "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_REGION")
"""Variables the workers need as the driver has them: caches, offline mode, the object-storage endpoint.

No secret is passed (model API keys named by a variant's ``api_key_env``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``): a runtime env is shown by the dashboard, the state API and Ray's
runtime_env_agent.log. Workers read secrets from their own environment (a local cluster inherits the
shell's that started it; cluster nodes get them from their instance role or their start-up environment).
"""


def worker_env() -> dict[str, str]:
    """The passed variables this driver has, for each actor's runtime env.

    Given per actor too (not only at ``ray.init``), so they reach the workers also when the caller
    connected to Ray itself (a notebook) before running an experiment.
    """
    return {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}


def _job_env_vars() -> set[str]:
    """Variables the submitted job's runtime env already sets (empty outside ``ray job submit``)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return set()
    try:
        return set((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return set()


def connect(spec: RaySpec) -> None:
    """Join ``spec.address`` (or the cluster this process already belongs to), else start a local one.

    Ray Data's own progress bars are turned off: the CLI shows one bar per stage instead.
    """
    from ray.data import DataContext

    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env["TOKENIZERS_PARALLELISM"] = "false"
        for key in _job_env_vars():  # Ray refuses to merge a key set both by the job and here
            env.pop(key, None)
        address = spec.address or os.environ.get("RAY_ADDRESS")
        # "local": start a cluster of our own, never silently join one another process started here.
        kwargs = {"address": "local", "num_cpus": spec.num_cpus} if not address else {"address": address}
        ray.init(**kwargs, runtime_env={"env_vars": env}, logging_level=logging.WARNING,
                 log_to_driver=True, configure_logging=True)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # It says, once per run, that Ray's bars are off; ours replace them.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
