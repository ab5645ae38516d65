"""A loop shared with forked children (svdflow.run.forked) gives the plain loop's results whatever the
children do, and a plan shared so is the plan decided in one process."""

from __future__ import annotations

import io
import json
import os
import threading

import psutil
import pytest
from conftest import run_cli, write_image, write_manifest

from svdflow.api import load_run_spec, plan_run, run_manifest
from svdflow.run import forked
from svdflow.run.forked import map_forked, write_forked

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"),
                                reason="forked children are for Linux")


@pytest.fixture
def three_processes(monkeypatch):
    """Any loop of 3 items or more is shared among 3 processes: this one and two children. (Threads
    that earlier tests in this process left, as tqdm's monitor, are not looked at.)"""
    monkeypatch.setattr(forked, "MIN_SHARE", 1)
    monkeypatch.setattr(forked, "available_cpus", lambda: 3)
    monkeypatch.setattr(forked, "only_thread", lambda: True)


def squares(compute=None, pack=lambda result: result) -> list[tuple[int, int]]:
    """(i * i, the pid that computed it) for i in 0..9, shared as [0, 3), [3, 6), [6, 10)."""
    return map_forked(list(range(10)), compute or (lambda i: (i * i, os.getpid())), pack, lambda i, packed: packed)


def test_each_child_computes_its_share_and_the_results_are_the_plain_loops(three_processes):
    results = squares()

    assert [value for value, _ in results] == [i * i for i in range(10)]
    pids = [pid for _, pid in results]
    assert pids[:3] == [os.getpid()] * 3
    assert len({pids[3], pids[6]} - {os.getpid()}) == 2 and pids[3:6] == [pids[3]] * 3 and pids[6:] == [pids[6]] * 4
    assert not psutil.Process().children()  # every child waited for


def test_a_share_whose_child_dies_and_a_result_with_no_compact_form_are_computed_here(three_processes):
    parent = os.getpid()

    def compute(i):
        if i == 8 and os.getpid() != parent:
            os._exit(3)  # the second child dies half-way
        return i * i, os.getpid()

    results = squares(compute, pack=lambda result: None if result[0] == 16 else result)

    assert [value for value, _ in results] == [i * i for i in range(10)]
    pids = [pid for _, pid in results]
    assert pids[6:] == [parent] * 4  # the dead child's share
    assert pids[4] == parent and pids[3] == pids[5] != parent  # 16 had no compact form: decided again here


def test_with_no_process_to_be_had_this_one_does_every_share(three_processes, monkeypatch):
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert squares() == [(i * i, os.getpid()) for i in range(10)]


def test_an_exception_is_raised_as_the_plain_loop_raises_it_and_no_child_is_left(three_processes):
    def compute(i):
        if i == 7:
            raise ValueError(f"item {i}")
        return i * i, os.getpid()

    with pytest.raises(ValueError, match="^item 7$"):
        squares(compute)
    assert not psutil.Process().children()


def test_writes_shared_with_children_are_the_plain_writes_and_a_dead_childs_share_is_written_here(three_processes):
    parent = os.getpid()

    def render(i):
        if i == 8 and os.getpid() != parent:
            os._exit(3)
        return f"{i}@{os.getpid()}".encode()

    out = io.BytesIO()
    write_forked(list(range(10)), render, out, b",", chunk=2)

    parts = [part.split(b"@") for part in out.getvalue().split(b",")]
    assert [int(i) for i, _ in parts] == list(range(10))
    pids = [int(pid) for _, pid in parts]
    assert pids[:3] == [parent] * 3 and pids[3:6] == [pids[3]] * 3 and pids[3] != parent and pids[6:] == [parent] * 4
    assert not psutil.Process().children()
    empty = io.BytesIO()
    write_forked([], render, empty, b",")
    assert empty.getvalue() == b""


def test_no_child_is_forked_while_another_thread_runs_or_for_a_short_loop(three_processes, monkeypatch):
    monkeypatch.undo()
    monkeypatch.setattr(forked, "MIN_SHARE", 1)
    monkeypatch.setattr(forked, "available_cpus", lambda: 3)
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert {pid for _, pid in squares()} == {os.getpid()}
    finally:
        release.set()
        thread.join()
    monkeypatch.setattr(forked, "only_thread", lambda: True)
    monkeypatch.setattr(forked, "MIN_SHARE", 4)
    assert forked.processes_for(11) == 2 and forked.processes_for(7) == 1


@pytest.mark.parametrize(("files", "quota", "cpus"), [
    ({"cpu.max": "150000 100000\n"}, 1.5, 2),  # cgroup v2, `docker --cpus 1.5`: 2 processes
    ({"cpu.max": "100000 100000\n"}, 1.0, 1),
    ({"cpu.max": "max 100000\n"}, None, None),  # no quota: the affinity mask
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5, 1),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None, None),
    ({"cpu.max": "garbled\n"}, None, None),
    ({}, None, None),  # no cgroup files (not a container, or not readable)
])
def test_a_containers_cpu_quota_caps_the_processes(tmp_path, monkeypatch, files, quota, cpus):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert forked.cpu_quota(tmp_path) == quota
    assert forked.available_cpus(tmp_path) == (cpus or 8)


MANIFEST = """svdflow: 1
name: f
model: {source: 'builtin:tiny'}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4]}
defaults: {num_frames: 2, num_inference_steps: 1, width: 64, height: 64}
items:
"""


def test_a_plan_shared_with_children_is_the_plan_decided_in_one_process(tmp_path, monkeypatch, capsys):
    """(The render leaves tqdm's monitor thread running in this process: `only_thread` is patched.)"""
    for name in "abcde":
        write_image(tmp_path / f"{name}.png", seed=ord(name))
    items = "".join(f"  - {{id: {name}, image: {name}.png}}\n" for name in "abcd")
    manifest = write_manifest(tmp_path, MANIFEST + items)
    assert set(run_manifest(manifest).statuses.values()) == {"done"}
    (tmp_path / "out" / "b.mp4").unlink()  # re-encoded from its master
    write_manifest(tmp_path, MANIFEST + items.replace("{id: c, image: c.png}", "{id: c, image: c.png, fps: 9}")
                   + "  - {id: e, image: e.png}\n  - {id: gone, image: gone.png}\n")
    spec = load_run_spec(manifest)

    monkeypatch.setattr(forked, "MIN_SHARE", 10**9)
    alone = plan_run(spec)
    alone_json = run_cli(capsys, "plan", str(manifest), "--json")
    monkeypatch.setattr(forked, "MIN_SHARE", 1)
    monkeypatch.setattr(forked, "available_cpus", lambda: 3)
    monkeypatch.setattr(forked, "only_thread", lambda: True)
    assert forked.processes_for(len(spec.jobs)) == 3
    shared = plan_run(spec)
    shared_json = run_cli(capsys, "plan", str(manifest), "--json")

    assert [(p.job.id, p.status) for p in shared] == [
        ("a", "up to date"), ("b", "re-encode"), ("c", "changed"), ("d", "up to date"), ("e", "new"),
        ("gone", "input error")]
    assert shared == alone
    assert [p.to_json() for p in shared] == [p.to_json() for p in alone]
    assert [p.material for p in shared] == [p.material for p in alone]
    assert shared_json == alone_json and [job["id"] for job in json.loads(shared_json[1])] == [
        "a", "b", "c", "d", "e", "gone"]
