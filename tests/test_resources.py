"""Resource settings as Ray options, and the check that refuses a pool no cluster of these nodes holds."""

from __future__ import annotations

from invoicelab.config import FaultSpec, ResourceSpec
from invoicelab.orchestrator.resources import actor_options, demand, fit_problem

NODES = [{"CPU": 8.0, "GPU": 2.0, "accelerator_type:L4": 1.0}, {"CPU": 8.0, "GPU": 2.0, "spot": 4.0}]


def test_a_variants_reservation_becomes_actor_options_with_bounded_faults():
    res = ResourceSpec(num_cpus=2, num_gpus=0.5, actors=3, accelerator_type="L4", custom={"spot": 1})
    opts = actor_options(res, FaultSpec(max_restarts=2), "exp/v/0", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert opts["num_cpus"] == 2 and opts["num_gpus"] == 0.5 and opts["accelerator_type"] == "L4"
    assert opts["resources"] == {"spot": 1} and opts["name"] == "exp/v/0"
    assert opts["max_restarts"] == 2 and opts["max_task_retries"] == 0  # retries are the orchestrator's
    assert opts["runtime_env"] == {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}}
    assert demand(res) == {"CPU": 2, "GPU": 0.5, "spot": 1, "accelerator_type:L4": 0.001}


def test_pools_that_fit_are_not_refused():
    assert fit_problem("v", ResourceSpec(num_cpus=4, num_gpus=1, actors=4), NODES) is None
    assert fit_problem("v", ResourceSpec(num_cpus=1, accelerator_type="L4"), NODES) is None


def test_an_actor_larger_than_every_node_is_refused_with_the_numbers():
    problem = fit_problem("variant 'big'", ResourceSpec(num_cpus=1, num_gpus=3), NODES)
    assert problem == ("variant 'big': one actor asks for CPU=1, GPU=3 but no node has that much "
                       "(largest node: CPU=8, GPU=2; 2 node(s))")
    assert "no node" in fit_problem("v", ResourceSpec(num_cpus=1, num_gpus=1, custom={"spot": 1},
                                                      accelerator_type="L4"), NODES)


def test_a_pool_larger_than_the_cluster_is_refused_with_the_totals():
    problem = fit_problem("variant 'wide'", ResourceSpec(num_cpus=1, num_gpus=1, actors=5), NODES)
    assert problem == "variant 'wide': 5 actors ask for CPU=5, GPU=5 in all but the cluster's total is CPU=16, GPU=4"


def test_no_secret_travels_in_a_workers_runtime_env(monkeypatch):
    from invoicelab.orchestrator.cluster import worker_env

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-planted")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t0ken-planted")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    env = worker_env()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert "s3cr3t-planted" not in env.values() and "t0ken-planted" not in env.values()
