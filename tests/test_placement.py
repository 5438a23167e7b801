"""Placement on a simulated multi-node cluster with logical GPUs (``ray.cluster_utils.Cluster``).

Runs in a subprocess (one Ray instance per process; the session's cluster stays as it is): 4 nodes
x 2 GPUs; 8 single-GPU variants, then 3 variants x 2 actors at 0.5 GPU, then a model variant that
asks for a GPU where torch has no CUDA. Every row records the node and GPU ids its actor saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from invoicelab.config import parse_experiment
    from invoicelab.orchestrator.pipeline import run_experiment

    out = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2})
    for _ in range(3):
        cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    fields = {"total": "amount"}
    base = {"kind": "model", "dataset": {"source": "synthetic", "n": 4}, "fields": fields,
            "page_stage": {"num_cpus": 0.5}}
    one_gpu = [{"name": f"g{i}", "backend": "fake", "batch_size": 1, "options": {"delay_s": 0.3},
                "resources": {"num_cpus": 0.25, "num_gpus": 1}} for i in range(8)]
    halves = [{"name": f"h{i}", "backend": "fake", "batch_size": 1, "options": {"delay_s": 0.2},
               "resources": {"num_cpus": 0.25, "num_gpus": 0.5, "actors": 2}} for i in range(3)]
    cuda = [{"name": "llm-gpu", "backend": "ocr-llm", "model": "smollm2-135m-instruct", "ocr": {"engine": "none"},
             "resources": {"num_cpus": 0.25, "num_gpus": 1}}]
    report = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
    for name, variants in (("whole", one_gpu), ("halves", halves), ("cuda", cuda)):
        exp = parse_experiment({**base, "name": name, "output_dir": f"{out}/{name}", "variants": variants})
        result = run_experiment(exp)
        report[name] = str(result.results)
        report[name + "_actors"] = result.summary["actors"]
    json.dump(report, open(f"{out}/report.json", "w"))
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, private_cache):
    out = tmp_path_factory.mktemp("placement")
    # A private Ray temp dir: Cluster records itself as "the current cluster" there, for this test only.
    ray_tmp = tempfile.mkdtemp(prefix="rp", dir="/tmp")
    env = {**os.environ, "INVOICELAB_CACHE": str(private_cache), "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True,
                              timeout=540)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    return report, {k: pd.read_parquet(v) for k, v in report.items() if k in ("whole", "halves", "cuda")}


def gpus_in_use(df: pd.DataFrame) -> pd.DataFrame:
    """One row per actor: the node and the GPU ids it was given."""
    actors = df.drop_duplicates("worker")
    return actors.assign(gpu=actors["gpu_ids"].map(lambda ids: ",".join(ids)))


def test_eight_single_gpu_variants_each_get_a_gpu_of_their_own(runs):
    report, frames = runs
    df = frames["whole"]
    assert report["nodes"] == 4
    assert len(df) == 32 and df["error"].isna().all()
    actors = gpus_in_use(df)
    assert len(actors) == 8 and set(actors["variant"]) == {f"g{i}" for i in range(8)}
    assert actors["gpu_ids"].map(len).eq(1).all()
    assert not actors.duplicated(["node_id", "gpu"]).any()  # no two variants share a GPU
    assert actors["node_id"].nunique() == 4  # 8 GPUs on 4 nodes: all were used


def test_half_gpu_actors_share_gpus_two_by_two(runs):
    report, frames = runs
    df = frames["halves"]
    assert len(df) == 12 and df["error"].isna().all() and df["gpu_ids"].map(len).eq(1).all()
    actors = [a for pool in report["halves_actors"].values() for a in pool]  # every actor, busy or not
    assert len(actors) == 6 and all(len(a["gpu_ids"]) == 1 for a in actors)
    per_gpu = Counter((a["node_id"], a["gpu_ids"][0]) for a in actors)
    assert max(per_gpu.values()) <= 2  # fractions say two may share, never three
    assert {name: len(pool) for name, pool in report["halves_actors"].items()} == {"h0": 2, "h1": 2, "h2": 2}


def test_a_gpu_variant_without_cuda_fails_at_start_with_the_reason(runs):
    _, frames = runs
    df = frames["cuda"]
    assert len(df) == 4 and (df["error_stage"] == "load").all()
    assert df["error"].str.contains("asked for but torch sees no CUDA GPU").all()
    assert df["gpu_ids"].map(len).eq(1).all()  # the actor did get a (logical) GPU
