"""overlap_decode: each job's VAE decode runs during the next job's denoising steps.

On a CPU the decode runs inside the next job's first step callback, in the order a GPU queues it,
so these tests check the order of events, the frames, failures and interrupts; what it gains on a
GPU is measured by `svdflow bench` (balanced and max-speed report an `overlap` block).
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch
from conftest import benchmark_script, recorded, write_image, write_manifest
from PIL import Image
from pydantic import ValidationError

from svdflow.api import RunOptions, run_manifest
from svdflow.errors import DeviceError, Interrupted
from svdflow.hardware import DeviceFacts, ResolvedHardware, resolve_hardware
from svdflow.manifest import load_run_spec
from svdflow.manifest.schema import Hardware
from svdflow.pipeline import render
from svdflow.pipeline.ladder import next_rung
from svdflow.pipeline.overlap import OverlappedRenderer
from svdflow.pipeline.session import PipelineSession

MANIFEST = """
svdflow: 1
name: o
model: {source: "builtin:tiny"}
hardware: {profile: cpu, overlap_decode: OVERLAP}
output: {dir: OUT, formats: [frames]}
defaults: {num_frames: 4, num_inference_steps: 2, width: 112, height: 64}
items:
  - {id: a, image: a.png}
  - {id: b, image: b.png, motion_bucket_id: 30}
  - {id: c, image: a.png, seed: 9}
"""


@pytest.fixture
def folder(tmp_path):
    write_image(tmp_path / "a.png", 112, 64)
    write_image(tmp_path / "b.png", 112, 64, seed=1)
    return tmp_path


def manifest(folder, overlap: bool, out: str = "out"):
    return write_manifest(folder, MANIFEST.replace("OVERLAP", str(overlap).lower()).replace("OUT", out),
                          f"{out}.yaml")


def index(folder, out: str = "out") -> dict[str, dict]:
    return recorded(folder / out)


class Recorder:
    """A job's sink that logs, with the steps, into one list of events."""

    def __init__(self, events: list, job_id: str):
        self.events, self.job_id = events, job_id
        self.result = self.error = None

    def done(self, result):
        self.result = result
        self.events.append(("done", self.job_id))

    def failed(self, exc):
        self.error = exc
        self.events.append(("failed", self.job_id))


def submit_all(session, spec, folder, events):
    outcomes = {}
    renderer = OverlappedRenderer(session)
    for job in spec.jobs[:2]:
        outcomes[job.id] = Recorder(events, job.id)
        image = Image.open(folder / job.image).convert("RGB")
        renderer.submit(job, image, outcomes[job.id], lambda done, total, job=job: events.append((job.id, done)))
        events.append(("submitted", job.id))
    renderer.finish()
    return outcomes


def test_a_jobs_decode_runs_in_the_next_jobs_first_step_and_gives_the_same_frames(folder):
    spec = load_run_spec(manifest(folder, True))
    session = PipelineSession(spec, spec.jobs)
    events: list = []

    outcomes = submit_all(session, spec, folder, events)

    # Without overlap, ("done", "a") would come before ("submitted", "a").
    assert events == [("a", 1), ("a", 2), ("submitted", "a"), ("done", "a"), ("b", 1), ("b", 2),
                      ("submitted", "b"), ("done", "b")]
    for job in spec.jobs[:2]:
        image = Image.open(folder / job.image).convert("RGB")
        assert np.array_equal(outcomes[job.id].result.frames, session.render(job, image)), job.id
    assert outcomes["a"].result.hardware.overlap_decode is True
    assert outcomes["a"].result.decode_s is not None and outcomes["a"].result.render_s >= outcomes["a"].result.decode_s


def test_a_run_with_overlap_writes_the_frames_of_a_run_without(folder):
    run_manifest(manifest(folder, False, "plain"))
    result = run_manifest(manifest(folder, True, "overlap"))

    assert result.statuses == {"a": "done", "b": "done", "c": "done"}
    plain, overlapped = index(folder, "plain"), index(folder, "overlap")
    assert {k: e["frames_sha256"] for k, e in overlapped.items()} == {k: e["frames_sha256"] for k, e in plain.items()}
    assert [e["hardware"]["overlap_decode"] for e in overlapped.values()] == [True, True, True]
    assert all(e["timings"]["decode_s"] >= 0 for e in overlapped.values())
    assert sorted(p.name for p in (folder / "overlap" / "b_frames").iterdir()) == [f"{i:05d}.png" for i in range(4)]


def fail_first_decode(monkeypatch):
    real = render.decode_frames

    def decode_frames(pipe, latents, num_frames, chunk):
        if not hasattr(decode_frames, "failed"):
            decode_frames.failed = True
            raise RuntimeError("VAE exploded")
        return real(pipe, latents, num_frames, chunk)

    monkeypatch.setattr(render, "decode_frames", decode_frames)


def test_a_failed_deferred_decode_fails_its_own_job_only(folder, monkeypatch):
    fail_first_decode(monkeypatch)
    result = run_manifest(manifest(folder, True))

    assert result.statuses == {"a": "failed", "b": "done", "c": "done"}
    assert result.errors == {"a": "job 'a': the pipeline failed: RuntimeError: VAE exploded"}
    assert index(folder)["a"]["error"]["stage"] == "render"


def test_fail_fast_stops_after_the_job_during_which_a_deferred_decode_failed(folder, monkeypatch):
    fail_first_decode(monkeypatch)
    result = run_manifest(manifest(folder, True), RunOptions(fail_fast=True))

    # b was denoised when a's decode failed; it is finished and kept, c is not started.
    assert result.statuses == {"a": "failed", "b": "done"}


def test_out_of_memory_beside_the_next_job_turns_overlap_off_and_renders_the_job_again(folder, monkeypatch):
    real, calls = render.decode_frames, []

    def decode_frames(pipe, latents, num_frames, chunk):
        calls.append(chunk)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(pipe, latents, num_frames, chunk)

    monkeypatch.setattr(render, "decode_frames", decode_frames)
    spec = load_run_spec(manifest(folder, True))
    session = PipelineSession(spec, spec.jobs)
    events: list = []

    outcomes = submit_all(session, spec, folder, events)

    # a's decode failed in b's first step; b goes on, then a renders again in full, where nothing
    # runs beside it, and overlap is off from then on (b was denoised with it on, so it is deferred).
    assert events == [("a", 1), ("a", 2), ("submitted", "a"), ("b", 1), ("b", 2), ("done", "a"), ("submitted", "b"),
                      ("done", "b")]
    retries = session.hardware_record("a").oom_retries
    assert [r.changed for r in retries] == ["overlap_decode=False"]
    assert retries[0].error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB"
    assert outcomes["a"].result.hardware.overlap_decode is False and outcomes["b"].result.hardware.overlap_decode is True
    assert session.hardware.overlap_decode is False
    image = Image.open(folder / "a.png").convert("RGB")
    assert np.array_equal(outcomes["a"].result.frames, session.render(spec.jobs[0], image))


def test_ctrl_c_while_the_next_job_denoises_keeps_the_job_before_it(folder, monkeypatch):
    real, calls = render.denoise_latents, []

    def denoise_latents(pipe, image, params, **kwargs):
        calls.append(params.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(pipe, image, params, **kwargs)

    monkeypatch.setattr(render, "denoise_latents", denoise_latents)
    with pytest.raises(Interrupted, match="interrupted; 1 job finished and recorded in"):
        run_manifest(manifest(folder, True))

    recorded = index(folder)
    assert list(recorded) == ["a"] and recorded["a"]["status"] == "done"
    assert len(list((folder / "out" / "a_frames").iterdir())) == 4


def test_overlap_needs_resident_models():
    # What the file decides is refused by `svdflow validate` (tests/invalid/overlap_with_offload.yaml);
    # what auto decides on the machine, when the run resolves its hardware.
    small_gpu = DeviceFacts(1, False, {"cuda:0": 8 * 1024**3})
    with pytest.raises(DeviceError) as raised:
        resolve_hardware(Hardware(overlap_decode=True), small_gpu)
    assert str(raised.value) == (
        "hardware.overlap_decode: true decodes beside the next job's UNet, which needs every model resident, "
        "but offload is 'group' (profile low-vram); set offload: none, or overlap_decode: false")
    with pytest.raises(ValidationError, match="but offload is 'model'; set offload: none, or overlap_decode: false"):
        Hardware(profile="balanced", offload="model", overlap_decode=True)
    gpu = DeviceFacts(1, False, {"cuda:0": 80 * 1024**3})
    assert resolve_hardware(Hardware(profile="low-vram", offload="none", overlap_decode=True), gpu).overlap_decode is True
    assert resolve_hardware(Hardware(profile="balanced", overlap_decode=True), gpu).overlap_decode is True
    assert resolve_hardware(Hardware(profile="balanced"), gpu).overlap_decode is False


def test_the_memory_ladder_turns_overlap_off_first():
    hw = ResolvedHardware(profile="balanced", device="cuda:0", dtype="float16", offload="none",
                          forward_chunking=False, decode_chunk_size=8, compile=False, overlap_decode=True)
    assert next_rung(hw) == hw.replace(overlap_decode=False)


def test_out_of_memory_while_the_next_job_denoises_settles_the_previous_one_then_steps_down(folder, monkeypatch):
    real, calls = render.denoise_latents, []

    def denoise_latents(pipe, image, params, **kwargs):
        calls.append(params.motion_bucket_id)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real(pipe, image, params, **kwargs)

    monkeypatch.setattr(render, "denoise_latents", denoise_latents)
    spec = load_run_spec(manifest(folder, True))
    session = PipelineSession(spec, spec.jobs)
    events: list = []

    outcomes = submit_all(session, spec, folder, events)

    # a is decoded once b's failed attempt is gone; b runs again one rung lower, without overlap.
    assert events == [("a", 1), ("a", 2), ("submitted", "a"), ("done", "a"), ("b", 1), ("b", 2), ("done", "b"),
                      ("submitted", "b")]
    assert calls == [127, 30, 30]
    assert [r.changed for r in session.hardware_record("b").oom_retries] == ["overlap_decode=False"]
    assert session.hardware_record("a").oom_retries == []
    assert outcomes["a"].result.hardware.overlap_decode is True and outcomes["b"].result.hardware.overlap_decode is False


@pytest.mark.slow
def test_the_gpu_scripts_run_check_compares_every_jobs_frames(tmp_path, monkeypatch, capsys):
    """benchmarks/overlap_run_check.py's main, in this process (a process of its own would spend seconds
    importing torch and diffusers before the check begins)."""
    path = tmp_path / "check.json"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the script makes its campaign's folder
    code = benchmark_script("overlap_run_check").main(["--size", "64x112", "--frames", "4", "--steps", "2",
                                                       "--jobs", "2", "--json", str(path)])
    assert code == 0, capsys.readouterr().out
    result = json.loads(path.read_text())
    assert (result["identical"], result["ok"]) == (2, True)
    assert result["runs"]["true"]["overlap_recorded"] == [True, True]
    assert result["runs"]["false"]["overlap_recorded"] == [False, False]
