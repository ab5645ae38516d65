"""Storage said up front: `plan` estimates the bytes a campaign writes from each format's measured
bytes per frame (svdflow.outputs.storage, measured by benchmarks/bench_storage.py)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli, write_image, write_manifest

from svdflow.api import load_run_spec, run_manifest
from svdflow.manifest.schema import JobParams
from svdflow.outputs.index import RunIndex
from svdflow.outputs.storage import NOISE, SMOOTH, bytes_per_frame, job_bytes, spec_job_bytes
from svdflow.outputs.store import OutputStore


def test_an_svd_xt_video_is_its_frames_times_the_measured_bytes_per_frame():
    xt = JobParams(num_frames=25, num_inference_steps=25, width=1024, height=576, playback_fps=7)
    files = job_bytes(xt, ["mp4", "webp"], crf=18, prores_profile="hq", masters=True, content="smooth")
    assert files.videos == {"mp4": 25 * 11_021, "webp": 25 * 55_078}
    assert files.master == 25 * SMOOTH["master"] == 10_823_025  # the README's ~10.3 MiB per SVD-XT video
    # Half the pixels, a pingpong loop (25 + 23 frames written; the master keeps the 25 rendered).
    half = JobParams(num_frames=25, num_inference_steps=25, width=512, height=576, loop="pingpong", playback_fps=7)
    files = job_bytes(half, ["gif"], crf=18, prores_profile="hq", masters=True, content="noise")
    assert files.videos == {"gif": round(NOISE["gif"] * 48 / 2)} and files.master == round(NOISE["master"] * 25 / 2)
    assert job_bytes(xt, ["mp4"], crf=18, prores_profile="hq", masters=False, content="smooth").master == 0


def test_crf_between_measured_values_is_geometric_and_past_them_extrapolated():
    assert bytes_per_frame("mp4", crf=18) == 11_021 and bytes_per_frame("hevc", crf=35) == 985
    assert math.isclose(bytes_per_frame("mp4", crf=20), 11_021 * (5_511 / 11_021) ** (2 / 5))
    assert math.isclose(bytes_per_frame("webm", crf=40), 1_958 * (1_958 / 3_050) ** (5 / 7))
    assert bytes_per_frame("prores", prores_profile="proxy") == 65_000
    assert bytes_per_frame("mp4", crf=30, content="noise") == NOISE["mp4"]  # measured at the defaults only


MANIFEST = """
svdflow: 1
name: store
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4, gif]}
defaults: {num_frames: 8, num_inference_steps: 2, width: 224, height: 128}
items:
  - {id: a, image: a.png}
  - {id: b, image: a.png, seed: 3}
"""


@pytest.mark.slow  # two 224x128 jobs rendered and written in every format: several seconds
def test_plan_says_what_the_run_writes_and_the_estimate_holds_for_a_real_run(tmp_path, capsys):
    write_image(tmp_path / "a.png", width=224, height=128)
    manifest = write_manifest(tmp_path, MANIFEST)
    spec = load_run_spec(manifest)
    each = job_bytes(spec.jobs[0].params, ["mp4", "gif"], crf=18, prores_profile="hq", masters=True, content="noise")
    assert each == spec_job_bytes(spec, spec.jobs[0])  # builtin:tiny renders noise: the noise figures

    code, out, _ = run_cli(capsys, "plan", str(manifest))
    assert code == 0
    assert out.splitlines()[-2:] == [
        "2 to render, 0 to re-encode, 0 up to date",
        "storage (estimated from noise frames (builtin:tiny renders noise)): this run writes ~2.4 MiB: videos "
        "~954.3 KiB (mp4 ~343.6 KiB, gif ~610.7 KiB), masters ~1.5 MiB in .svdflow/masters/; the finished "
        "campaign holds ~2.4 MiB"]
    code, out, _ = run_cli(capsys, "plan", str(manifest), "--json")
    storage = [job["storage"] for job in json.loads(out)]
    assert storage == [{"videos": each.videos, "master": each.master, "total": each.total, "this_run": each.total}] * 2

    run_manifest(manifest, None)
    code, out, _ = run_cli(capsys, "plan", str(manifest), "--json")
    assert [job["storage"]["this_run"] for job in json.loads(out)] == [0, 0]  # up to date: nothing to write
    index = RunIndex.load(OutputStore(spec.output_dir))
    written = sum(o.bytes for e in index.entries.values() for o in e.outputs) + \
        sum(e.master.bytes for e in index.entries.values())
    # The frames of builtin:tiny are smoother than pure noise: what it writes is below the noise figures.
    assert 0.4 < written / (2 * each.total) < 1.0, (written, 2 * each.total)
