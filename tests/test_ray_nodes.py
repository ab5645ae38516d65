"""`svdflow run --engine ray` losing a node mid-run: a real two-node Ray cluster on this machine
(ray.cluster_utils.Cluster: a head and a worker node, 1 CPU each, on 127.0.0.1), and the worker
node's processes all killed while its worker renders. A cluster of its own: test_ray.py's has one node.
"""

from __future__ import annotations

import re

import pytest
from test_ray import Watch, campaign, index_of, live_actors, mp4_frames

from svdflow.api import run_manifest

# Every job 12 steps: the lost node's job is still denoising when its node goes.
ITEMS = ("  - {id: a, image: a.png, num_inference_steps: 12}\n"
         "  - {id: b, image: b.png, num_inference_steps: 12}\n"
         "  - {id: c, image: a.png, num_inference_steps: 12, seed: 3}\n")


@pytest.fixture(scope="module")
def two_nodes():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield cluster, node
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_node_lost_mid_job_its_job_runs_again_on_the_other_node(two_nodes, tmp_path):
    cluster, node = two_nodes
    manifest = campaign(tmp_path, ITEMS)
    nodes: dict[str, str] = {}
    lost: dict[str, str] = {}

    class NodeWatch(Watch):
        def worker_status(self, worker, status, info):
            super().worker_status(worker, status, info)
            if status == "ready":
                nodes[worker] = info["node"]

    def remove_the_node(watch, job_id, step, worker):
        if not lost and nodes[worker] == node.node_id:
            lost[worker] = job_id
            cluster.remove_node(node, allow_graceful=False)  # raylet, object store, workers: all SIGKILLed

    watch = NodeWatch(remove_the_node)
    result = run_manifest(manifest, reporter=watch, engine="ray")

    assert result.statuses == {"a": "done", "b": "done", "c": "done"}
    [worker] = lost
    assert sorted(set(nodes.values())) == sorted([cluster.head_node.node_id, node.node_id])
    # The job it was rendering, and one whose files it was writing if any: not necessarily the job whose
    # step's news came last (that one may have been written and recorded meanwhile).
    assert any(re.fullmatch(rf"{worker} was lost while (rendering|encoding) [abc] \(.*\); the job will run again on "
                            "the next free worker", note) for note in watch.notes), watch.notes
    entries = index_of(tmp_path / "out")
    assert entries.keys() == {"a", "b", "c"} and {e["status"] for e in entries.values()} == {"done"}
    for job_id in entries:
        assert mp4_frames(tmp_path / "out" / f"{job_id}.mp4") == 4
    assert live_actors(timeout=10) == []  # the lost worker, waiting for a CPU to restart on, was killed too
