"""Logging a finished run to MLflow, an optional extra for teams that already track experiments there.

One MLflow run per invoicelab run: parameters (kind, documents, variants, prompts, config digest),
metrics per (variant, prompt, field) named ``acc.<variant>.<prompt>.<field>`` plus ``accuracy.`` and
``f1.<variant>.<prompt>``, and the run's summary.json (experiment.json and report.html when present) as
artifacts. The history in ``invoicelab.history`` stays the default store; this only copies numbers out.

MLflow 3 keeps the ``file:`` store (a local folder) in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true``; a ``file:`` URI passed here is an explicit choice, so the opt-in is set for
the duration of the call only. This module never imports Ray or a model; mlflow is imported inside
``log_run`` (pip install 'invoicelab[mlflow]').
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoicelab.identity import digest

_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_PARAM_CHARS = 6000  # MLflow's limit of a parameter value's length


def metric_name(*parts: Any) -> str:
    """A metric name of dot-joined parts; in each part, dots and the characters MLflow refuses become ``_``.

    Dots inside a part are replaced too, so that the name splits back into its parts (``qwen2.5`` -> ``qwen2_5``).
    """
    return ".".join(re.sub(r"[^A-Za-z0-9_\-: /]", "_", str(p)) for p in parts)


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The metrics to log: each row's per-field accuracy, micro accuracy and F1 (missing ones skipped)."""
    fields = list(summary.get("fields") or [])
    out: dict[str, float] = {}
    for row in summary.get("rows") or []:
        where = (row.get("variant"), row.get("prompt"))
        named = [(("acc", *where, f), row.get(f)) for f in fields]
        named += [(("accuracy", *where), row.get("accuracy")), (("f1", *where), row.get("f1"))]
        out.update({metric_name(*parts): float(v) for parts, v in named
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def run_params(summary: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """The parameters to log: kind, documents, variant and prompt names, and the config digest."""
    rows = summary.get("rows") or []
    params = {"kind": summary.get("kind"), "documents": summary.get("documents"),
              "variants": ",".join(dict.fromkeys(str(r.get("variant")) for r in rows)),
              "prompts": ",".join(dict.fromkeys(str(r.get("prompt")) for r in rows))}
    experiment = Path(run_dir) / "experiment.json"
    if experiment.is_file():
        # The same digest as the history's config_digest: sha256 of the experiment JSON, keys sorted.
        params["config_digest"] = digest(json.loads(experiment.read_text(encoding="utf-8")))
    return {k: str(v)[:_PARAM_CHARS] for k, v in params.items() if v is not None}


def log_run(summary: dict[str, Any], run_dir: Path, tracking_uri: str, experiment_name: str | None = None) -> str:
    """Log a finished run to an MLflow tracking store.

    Args:
        summary: The run's summary.json content.
        run_dir: The run folder; its summary.json, experiment.json and report.html are logged as artifacts
            (summary.json written from ``summary`` when the folder has none).
        tracking_uri: MLflow tracking URI: ``file:///abs/mlruns``, ``http://host:5000``, ``databricks``, ...
        experiment_name: The MLflow experiment (created when absent); default the run's name.

    Returns:
        The MLflow run id.

    Raises:
        ImportError: mlflow is not installed.
    """
    try:
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise ImportError("logging to MLflow needs the mlflow extra: pip install 'invoicelab[mlflow]'") from err
    run_dir = Path(run_dir)
    name = experiment_name or str(summary.get("name") or "invoicelab")
    with _file_store_allowed(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = _experiment_id(client, name, MlflowException)
        run = client.create_run(experiment_id, run_name=str(summary.get("name") or run_dir.name),
                                tags={"invoicelab.run_dir": str(run_dir.resolve())})
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, 0) for k, v in run_metrics(summary).items()]
            params = [Param(k, v) for k, v in run_params(summary, run_dir).items()]
            client.log_batch(run_id, metrics=metrics[:_BATCH], params=params)
            for start in range(_BATCH, len(metrics), _BATCH):
                client.log_batch(run_id, metrics=metrics[start:start + _BATCH])
            _log_artifacts(client, run_id, summary, run_dir)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def _experiment_id(client: Any, name: str, already: type[Exception]) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except already:  # another process created it in between
        return client.get_experiment_by_name(name).experiment_id


def _log_artifacts(client: Any, run_id: str, summary: dict[str, Any], run_dir: Path) -> None:
    if (run_dir / "summary.json").is_file():
        client.log_artifact(run_id, str(run_dir / "summary.json"))
    else:
        client.log_dict(run_id, summary, "summary.json")
    for extra in ("experiment.json", "report.html"):
        if (run_dir / extra).is_file():
            client.log_artifact(run_id, str(run_dir / extra))


@contextmanager
def _file_store_allowed(tracking_uri: str):
    """Allow MLflow's file store while logging to a ``file:`` URI or a plain folder, then restore the setting."""
    local = tracking_uri.startswith("file:") or ("://" not in tracking_uri and not tracking_uri.startswith("databricks"))
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if local and before is None:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if local and before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
