"""Starting or joining the Ray cluster an experiment runs on."""

from __future__ import annotations

import logging
import os

import ray

from invoicelab.config import RaySpec

_PASSED_ENV = ("INVOICELAB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "AWS_ENDPOINT_URL",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")
"""Variables the workers need as the driver has them: caches, offline mode, object-storage credentials."""


def connect(spec: RaySpec) -> None:
    """Join ``spec.address`` (or the cluster this process already belongs to), else start a local one.

    Ray Data's own progress bars are turned off: the CLI shows one bar per stage instead.
    """
    from ray.data import DataContext

    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env["TOKENIZERS_PARALLELISM"] = "false"
        address = spec.address or os.environ.get("RAY_ADDRESS")
        kwargs = {"num_cpus": spec.num_cpus} if not address else {"address": address}
        ray.init(**kwargs, runtime_env={"env_vars": env}, logging_level=logging.WARNING,
                 log_to_driver=True, configure_logging=True)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # It says, once per run, that Ray's bars are off; ours replace them.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
