"""What a user runs to deploy: the cluster launcher config, the exported schema, the CI script."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from invoicelab.config import json_schema

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_ray_launcher_validation_and_keeps_the_jobs_api_private():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("invoicelab" in cmd or "constraints.txt" in cmd for cmd in config["setup_commands"])
    # The Jobs API runs what it is sent: reachable only through `ray dashboard` (SSH), token required.
    head_start = " ".join(config["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head_start), head_start
    assert "0.0.0.0" not in head_start
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    assert "~/.ray/auth_token" in config["file_mounts"], "the token must reach every node"


def test_committed_schema_matches_the_code():
    committed = json.loads((REPO / "configs" / "experiment.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` and commit configs/experiment.schema.json"


def test_ci_runs_make_test():
    assert "make test" in (REPO / ".ci" / "run").read_text()
