"""Many processes, one manifest: real launchers (accelerate, torchrun) on the CPU with builtin:tiny."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import recorded, run_cli, video_stream, write_image, write_manifest

from svdflow.api import RunOptions, read_provenance, run_manifest
from svdflow.run.engines.torchrun import World, assign, lonely_launch_hint

MANIFEST = """
svdflow: 1
name: dist
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4]}
defaults: {num_frames: 4, num_inference_steps: 2, width: 112, height: 64}
items:
  - {id: a, image: a.png}
  - {id: b, image: b.png, num_frames: 8}
  - {id: c, image: a.png, seed: 3}
  - {id: d, image: missing.png}
"""


def make_campaign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "a.png")
    write_image(folder / "b.png", seed=1)
    return write_manifest(folder, MANIFEST)


def launch(launcher: list[str], manifest: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "svdflow", "run", str(manifest)], capture_output=True, text=True,
                          timeout=400, env=env, cwd=manifest.parent)


def index_of(folder: Path) -> dict[str, dict]:
    lines = (folder / "out" / "index.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["id"] for line in lines}), "a job is listed twice"
    return recorded(folder / "out")


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.mark.slow
def test_two_processes_render_the_same_frames_as_one(tmp_path):
    single = make_campaign(tmp_path / "single")
    run_manifest(single)
    multi = make_campaign(tmp_path / "multi")

    proc = launch(ACCELERATE, multi)

    assert proc.returncode != 0  # job d fails: the launcher passes rank 0's exit code 1 on
    assert "[rank 0/2]" in proc.stderr and "[rank 1/2]" in proc.stderr
    assert "merged 2 ranks' records into" in proc.stderr
    assert "3 rendered, 0 re-encoded, 0 up to date, 1 failed" in proc.stderr
    one, two = index_of(tmp_path / "single"), index_of(tmp_path / "multi")
    assert list(two) == ["a", "b", "c", "d"]  # manifest order, whatever rank finished first
    for job_id in "abc":
        assert two[job_id]["status"] == "done"
        assert two[job_id]["frames_sha256"] == one[job_id]["frames_sha256"]
        # The files differ only by the paths in their provenance (the two campaigns' folders).
        assert video_stream(tmp_path / "multi" / "out" / f"{job_id}.mp4") == video_stream(
            tmp_path / "single" / "out" / f"{job_id}.mp4")
        provenance = [read_provenance(str(tmp_path / run / "out" / f"{job_id}.mp4")).model_dump(exclude={"input", "run"})
                      for run in ("single", "multi")]
        assert provenance[0] == provenance[1]
    assert two["d"]["status"] == "failed"
    assert not list((tmp_path / "multi" / "out").glob("index.rank*.json"))


@pytest.mark.slow
def test_resume_with_another_process_count_renders_only_what_is_missing(tmp_path):
    manifest = make_campaign(tmp_path)
    run_manifest(manifest, RunOptions(only=("b",)))
    before = index_of(tmp_path)["b"]["finished_unix"]

    proc = launch(TORCHRUN, manifest)

    assert "2 rendered, 0 re-encoded, 1 up to date, 1 failed" in proc.stderr, proc.stderr
    after = index_of(tmp_path)
    assert after["b"]["finished_unix"] == before
    assert {job_id: e["status"] for job_id, e in after.items()} == {
        "a": "done", "b": "done", "c": "done", "d": "failed"}


@pytest.mark.slow
def test_a_full_output_disk_stops_every_rank_and_rank_0_says_it_once(tmp_path, capsys, small_disk):
    """Each rank stops at its own first write; all still meet, rank 0 says it once and exits 3 (the
    launcher passes a failure on); the next run renders everything (in this process: a launch of its own
    would start three processes that spend seconds importing torch and diffusers each)."""
    if not small_disk.real:
        pytest.skip("needs a tmpfs to fill before the launch")
    manifest = make_campaign(tmp_path)
    manifest.write_text(manifest.read_text().replace("dir: out", "dir: disk/out"))
    out = small_disk.path / "out"
    out.mkdir()
    (out / ".svdflow.lock").write_text("x" * 100)  # its page is the lock's to rewrite: the run gets that far
    (out / ".svdflow").mkdir()  # marked as svdflow's before the disk filled, as a folder of earlier runs is
    (out / ".svdflow" / "README.txt").write_text("marked")
    small_disk.fill()

    proc = launch(TORCHRUN, manifest)

    assert proc.returncode != 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: output folder {re.escape(str(out))}: its disk is full \(No space left on device, writing "
        r"(\.svdflow/masters/[abc]\.mkv|d\.json)\); free some space on it or choose another output\.dir, then run "
        r"again \(0 jobs finished in this run are recorded; the next run renders only what is missing\)", errors[0]), \
        proc.stderr
    assert "exitcode  : 3" in proc.stderr  # rank 0's, as torchrun reports it
    small_disk.grow()

    code, _, err = run_cli(capsys, "run", str(manifest))

    assert code == 1 and "3 rendered, 0 re-encoded, 0 up to date, 1 failed" in err, err


def test_assign_balances_by_cost_and_is_deterministic():
    costs = [("big", 10.0), ("s1", 1.0), ("s2", 1.0), ("s3", 1.0), ("m", 5.0), ("s4", 1.0)]
    shares = assign(costs, 2)
    assert shares == [["big"], ["s1", "s2", "s3", "m", "s4"]]
    assert assign(costs, 2) == shares
    assert assign(costs, 3) == [["big"], ["m"], ["s1", "s2", "s3", "s4"]]
    assert assign([], 2) == [[], []]


@pytest.mark.parametrize("env, expected", [
    ({}, World(0, 1, 0, 1)),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}, World(3, 8, 1, 4)),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, World(1, 2, 1, 2)),
    ({"PMI_RANK": "2", "PMI_SIZE": "4"}, World(2, 4, 0, 4)),
])
def test_world_from_launcher_environment(env, expected):
    assert World.from_env(env) == expected


def test_single_process_accelerate_cpu_launch_is_explained():
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert lonely_launch_hint(env).startswith("accelerate started a single process: on CPUs, `accelerate launch "
                                              "--cpu --num_processes N` needs --mpirun_hostfile")
    assert lonely_launch_hint({**env, "RANK": "0", "WORLD_SIZE": "2"}) is None
    assert lonely_launch_hint({}) is None


@pytest.mark.slow  # two runs that render: several seconds
def test_a_killed_multi_process_runs_parts_are_merged_by_the_next_single_run(tmp_path):
    manifest = make_campaign(tmp_path)
    run_manifest(manifest, RunOptions(only=("a",)))
    out = tmp_path / "out"
    # What a killed 2-process run leaves: rank 1's part and run record, no index.jsonl, no sidecar
    # for its job.
    [run] = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    record = out / ".svdflow" / "record"
    (out / "index.jsonl").rename(record / f"{run['id']}.000000.jsonl")
    (out / "runs.jsonl").rename(record / f"{run['id']}.run.json")
    (out / "a.json").unlink()

    result = run_manifest(manifest, RunOptions(only=("a", "c")))

    assert result.statuses == {"a": "up to date", "c": "done"}
    assert sorted(p.name for p in record.iterdir()) == []
    assert [job_id for job_id in index_of(tmp_path)] == ["a", "c"]


def test_a_format_2_killed_multi_process_runs_shards_are_merged_and_upgraded(tmp_path):
    manifest = make_campaign(tmp_path)
    run_manifest(manifest, RunOptions(only=("a",)))
    out = tmp_path / "out"
    # What a killed 2-process run of svdflow 0.1.x left: rank 1's shard, no index.json, no sidecar.
    entry = recorded(out)["a"]
    del entry["run"]["id"]
    (out / "index.rank1.json").write_text(json.dumps({"svdflow_index": 2, "jobs": [entry]}))
    for name in ("index.jsonl", "runs.jsonl", "a.json"):
        (out / name).unlink()

    result = run_manifest(manifest, RunOptions(only=("a", "c")))

    assert result.statuses == {"a": "up to date", "c": "done"}
    assert not (out / "index.rank1.json").exists()
    assert [job_id for job_id in index_of(tmp_path)] == ["a", "c"]
