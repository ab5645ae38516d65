"""`svdflow rerender`: one job rendered again from its index entry alone, and `--verify`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest
import torch
from conftest import SVDFLOW, recorded, write_image
from test_run import tiny_manifest

from svdflow.api import run_manifest
from svdflow.cli import main


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """An output folder with a done job `a` and a failed job `broken`, and no manifest left."""
    folder = tmp_path_factory.mktemp("rerender")
    write_image(folder / "a.png")
    manifest = tiny_manifest(folder, "  - id: a\n    image: a.png\n  - id: broken\n    image: missing.png\n")
    assert run_manifest(manifest).statuses == {"a": "done", "broken": "failed"}
    manifest.unlink()  # an entry alone must be enough
    return folder / "out"


def entry(out: Path, job_id: str) -> dict:
    return recorded(out)[job_id]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rerender_in_process(capsys, *args: str) -> tuple[int, str, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        main(["rerender", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err.splitlines()


@pytest.mark.slow
def test_verify_in_a_new_process_matches_the_record_bit_for_bit(rendered, tmp_path):
    recorded = entry(rendered, "a")
    # The new process starts with torch's default thread count (the machine's cores), while CPU
    # frames depend on the count they were rendered with: rerender must use the recorded one.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([*SVDFLOW, "rerender", str(rendered / "index.jsonl"), "--id", "a", "--verify", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    again = rendered / "rerendered" / "a.mp4"
    assert json.loads(proc.stdout) == {"id": "a", "frames_sha256": recorded["frames_sha256"],
                                       "recorded_frames_sha256": recorded["frames_sha256"], "matches": True,
                                       "outputs": [str(again)], "differences": []}
    assert f"a: frames match the record -> {again}" in proc.stderr.splitlines()
    # Same frames, same encoder settings, same key comment: the very same file, beside the original.
    assert sha256(again) == sha256(rendered / "a.mp4") == recorded["outputs"][0]["sha256"]
    reader = imageio_ffmpeg.read_frames(str(again))
    next(reader)
    assert sum(1 for _ in reader) == 4


def test_verify_fails_naming_what_differs_from_a_tampered_entry(rendered, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(rendered, out)
    tampered = json.loads((out / "a.json").read_text())  # the job's sidecar: a whole entry, on its own
    rendered_with = tampered["params"]["motion_bucket_id"]
    tampered["params"]["motion_bucket_id"] = rendered_with + 50
    tampered["versions"]["torch"] = "0.0.1"
    (out / "a.json").write_text(json.dumps(tampered))

    code, stdout, stderr = rerender_in_process(capsys, str(out / "a.json"), "--verify", "--json")

    assert code == 1
    result = json.loads(stdout)
    assert result["matches"] is False
    assert (f"error: job 'a': frames differ from the record (sha256 {result['frames_sha256'][:12]} vs recorded "
            f"{tampered['frames_sha256'][:12]}); differences: params.motion_bucket_id is {rendered_with + 50} but was "
            f"rendered with {rendered_with}; torch 0.0.1 -> {torch.__version__}") in stderr


def test_verify_fails_on_an_edit_that_leaves_the_frames_alone(rendered, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(rendered, out)
    edited = json.loads((out / "a.json").read_text())
    edited["params"]["playback_fps"] = 12.0
    (out / "a.json").write_text(json.dumps(edited))
    lines = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    next(line for line in lines if line["id"] == "a")["params"]["playback_fps"] = 12.0
    (out / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    # From the folder: index.jsonl is the record at rest (no writer's trace is left).
    code, _, stderr = rerender_in_process(capsys, str(out), "--id", "a", "--verify")

    assert code == 1
    assert stderr[-1] == ("error: job 'a': frames match, but the entry was edited after rendering: "
                          "params.playback_fps is 12.0 but was rendered with 7.0; restore the entry or render "
                          "the job again")


def test_unknown_ids_and_unfinished_jobs_are_usage_errors(rendered, capsys):
    index = str(rendered / "index.jsonl")

    code, _, stderr = rerender_in_process(capsys, index, "--id", "nope", "--verify")
    assert code == 2
    assert stderr[-1] == f"error: {index}: no job 'nope' in this index; known ids: a, broken"

    code, _, stderr = rerender_in_process(capsys, index, "--id", "broken", "--verify")
    assert code == 2
    assert stderr[-1] == (f"error: {index}: job 'broken' has status 'failed', not done; only a finished job can "
                          "be rendered again (run the manifest to retry it)")
