"""`svdflow qc DIR`: scores for an existing output folder, from its masters (or, in a folder of svdflow
0.1, its mp4s), recorded in the entries; on real folders rendered by builtin:tiny and on the release-0.1
fixture."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import recorded, run_cli, write_image, write_manifest
from PIL import Image

from svdflow.api import run_manifest
from svdflow.inputs import resize_image
from svdflow.outputs.lock import OutputLock
from svdflow.outputs.store import OutputStore
from svdflow.quality.score import score_clip
from svdflow.quality.scores import QualityScores

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / "tests" / "fixtures" / "release-0.1-smoke"
MANIFEST = """
svdflow: 1
name: qc-tiny
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4]}
defaults: {num_frames: 4, num_inference_steps: 2, width: 64, height: 64}
items:
  - {id: a, image: a.png}
  - {id: b, image: b.png, resize: pad}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A real builtin:tiny folder of two jobs (masters kept), rendered once for the module."""
    folder = tmp_path_factory.mktemp("qc")
    write_image(folder / "a.png", width=80, height=64, seed=0)
    write_image(folder / "b.png", width=96, height=48, seed=1)
    assert run_manifest(write_manifest(folder, MANIFEST)).statuses == {"a": "done", "b": "done"}
    return folder


@pytest.fixture
def folder(rendered, tmp_path) -> Path:
    """A copy of the rendered campaign as svdflow before scores left it: its entries without quality."""
    copy = tmp_path / "c"
    shutil.copytree(rendered, copy)
    for name in ("index.jsonl", "runs.jsonl", "a.json", "b.json"):  # its inputs and manifest are the copy's
        path = copy / "out" / name
        text = path.read_text().replace(str(rendered), str(copy))
        if name == "index.jsonl":
            text = "".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "quality"},
                                      separators=(",", ":")) + "\n" for line in text.splitlines())
        elif name != "runs.jsonl":
            text = json.dumps({k: v for k, v in json.loads(text).items() if k != "quality"}, indent=2) + "\n"
        path.write_text(text)
    return copy


def expected_scores(out: Path, job_id: str, source: str) -> QualityScores:
    """The scores computed here from the frames of `source` (a file of the folder `out`) and the input
    resized as the render did."""
    import imageio_ffmpeg

    entry = recorded(out)[job_id]
    params = entry["params"]
    reader = imageio_ffmpeg.read_frames(str(out / source))
    meta = next(reader)
    width, height = meta["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
    with Image.open(entry["input"]["uri"]) as image:
        conditioned = resize_image(image.convert("RGB"), params["width"], params["height"], params["resize"])
    return score_clip(frames, np.asarray(conditioned), fps=params["fps"])


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_scores_every_job_from_its_master_and_records_it(folder, capsys):
    before = recorded(folder / "out")
    assert all("quality" not in entry for entry in before.values())
    code, out, err = run_cli(capsys, "qc", str(folder / "out"))
    assert code == 0, err
    lines = err.splitlines()
    assert [line.split(" in ")[0] for line in lines[:2]] == ["[1/2] a: scored from master", "[2/2] b: scored from master"]
    assert lines[2].startswith(f"{folder / 'out'}: 2 jobs: 2 scored; ") and lines[2].endswith(" ms per clip")
    after = recorded(folder / "out")
    for job_id in ("a", "b"):
        quality = after[job_id]["quality"]
        assert quality["thresholds"] is None and quality["passed"] is None
        assert (quality["kept"], quality["attempts"], quality["failures"]) == (0, [], [])
        sidecar = json.loads((folder / "out" / f"{job_id}.json").read_text())
        assert sidecar["quality"] == quality
        # Nothing else of the entry changed: the job stays up to date.
        assert {k: v for k, v in after[job_id].items() if k != "quality"} == before[job_id]
    # The record compacted once, at the end: index.jsonl holds the scores, no part is left.
    lines = [json.loads(line) for line in (folder / "out" / "index.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b"] and all("quality" in line for line in lines)
    assert list((folder / "out" / ".svdflow" / "record").iterdir()) == []


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_scores_are_the_masters_frames_scored_against_the_resized_input(rendered, folder, capsys):
    assert run_cli(capsys, "qc", str(folder / "out"))[0] == 0
    after = recorded(folder / "out")
    by_the_run = recorded(rendered / "out")
    for job_id in ("a", "b"):
        # The master is lossless: what qc scored is the render's own frames, so its scores are the ones
        # the run computed from the frames in memory on its writer side.
        expected = expected_scores(folder / "out", job_id, f".svdflow/masters/{job_id}.mkv")
        assert after[job_id]["quality"]["scores"] == expected.model_dump(mode="json"), job_id
        assert after[job_id]["quality"]["scores"] == by_the_run[job_id]["quality"]["scores"], job_id


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_skips_scored_jobs_rejudges_on_new_thresholds_and_rescores_with_force(folder, capsys):
    out = str(folder / "out")
    assert run_cli(capsys, "qc", out)[0] == 0
    scored = {k: v["quality"]["scores"] for k, v in recorded(folder / "out").items()}
    code, _, err = run_cli(capsys, "qc", out)
    assert code == 0
    assert err.splitlines() == ["[1/2] a: skipped: already scored (--force scores it again)",
                                "[2/2] b: skipped: already scored (--force scores it again)",
                                f"{out}: 2 jobs: 0 scored, 2 skipped"]
    # A min_motion above a's motion and below b's: a does not pass, from its recorded scores.
    motion = sorted(scored[j]["motion"]["mean"] for j in ("a", "b"))
    limit = round((motion[0] + motion[1]) / 2, 4)
    low = min(("a", "b"), key=lambda j: scored[j]["motion"]["mean"])
    code, stdout, err = run_cli(capsys, "qc", out, "--thresholds", f"min_motion={limit}", "--json")
    assert code == 4  # as a run's: every job scored, one did not pass
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [(e["id"], e["outcome"], e["quality"]["passed"]) for e in events[:2]] == [
        (j, "re-judged", j != low) for j in ("a", "b")]
    assert events[2] == {"event": "summary", "folder": out, "jobs": 2, "scored": 0, "lossy": 0, "rejudged": 2,
                         "skipped": 0, "failed": [], "not_passed": [low], "exit_code": 4}
    failure = recorded(folder / "out")[low]["quality"]["failures"][0]
    assert (failure["threshold"], failure["limit"], failure["value"]) == ("min_motion", limit, scored[low]["motion"]["mean"])
    assert f"did not pass: min_motion ({scored[low]['motion']['mean']:g} < {limit:g})" in err
    # --force scores the frames again: the same scores, the thresholds it was judged by kept.
    code, _, err = run_cli(capsys, "qc", out, "--force")
    assert code == 4 and "2 scored" in err
    after = recorded(folder / "out")
    assert {k: v["quality"]["scores"] for k, v in after.items()} == scored
    assert after[low]["quality"]["thresholds"]["min_motion"] == limit


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_of_a_release_0_1_folder_scores_its_mp4s_and_says_they_are_lossy(tmp_path, capsys):
    out = tmp_path / "smoke"
    shutil.copytree(RELEASE, out)
    # The release recorded where its inputs were then; they are the repository's images (same sha256).
    images = tmp_path / "images"
    shutil.copytree(REPO / "manifests" / "images", images)
    for path in out.glob("*.json"):
        path.write_text(path.read_text().replace("/tmp/svdflow-release-0.1/manifests/images", str(images)))
    code, _, err = run_cli(capsys, "qc", str(out))
    assert code == 0, err
    lines = err.splitlines()
    assert [line.split(" in ")[0] for line in lines[:3]] == [
        f"[{n}/3] {j}: scored from {j}.mp4 (a lossy file: no master; its codec's loss is" for n, j in
        ((1, "sunset"), (2, "rocket"), (3, "city"))]
    assert lines[3].startswith(f"{out}: 3 jobs: 3 scored (3 from a lossy file: no master); ")
    after = recorded(out)
    for job_id in ("sunset", "rocket", "city"):
        expected = expected_scores(out, job_id, f"{job_id}.mp4")
        assert after[job_id]["quality"]["scores"] == expected.model_dump(mode="json"), job_id
    # The folder is upgraded to the current format by the record's compaction, as a run does.
    assert not (out / "index.json").exists() and (out / "index.jsonl").exists()


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_fails_a_job_whose_master_or_input_changed_and_records_the_others(folder, capsys):
    out = folder / "out"
    master = out / ".svdflow" / "masters" / "a.mkv"
    master.write_bytes(master.read_bytes()[:2000])
    write_image(folder / "b.png", width=96, height=48, seed=7)
    code, _, err = run_cli(capsys, "qc", str(out))
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("[1/2] a: FAILED: master .svdflow/masters/a.mkv could not be decoded (")
    sha = recorded(out)["b"]["input"]["sha256"]
    now = hashlib.sha256((folder / "b.png").read_bytes()).hexdigest()
    assert lines[1] == (f"[2/2] b: FAILED: job 'b': {folder / 'b.png'}: the input changed since the job was rendered "
                        f"(sha256 {now[:12]}, recorded {sha[:12]}); restore the original to score it")
    assert lines[2] == f"{out}: 2 jobs: 0 scored, 2 could not be scored"


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_refuses_a_folder_that_is_not_svdflows_one_without_a_record_and_a_locked_one(tmp_path, folder, capsys):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "qc", str(foreign))
    assert code == 2
    assert err == (f"error: output folder {foreign}: it holds files svdflow did not write (notes.txt) and is not an "
                   f"svdflow output folder; choose a new or empty output.dir, or let svdflow write among them by "
                   f"marking it as one (mkdir {foreign}/.svdflow)\n")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    code, _, err = run_cli(capsys, "qc", str(tmp_path / "nothing"))
    assert (code, err) == (2, f"error: {tmp_path / 'nothing'}: no such folder; pass the output folder of a run\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "qc", str(empty))
    assert (code, err) == (2, f"error: {empty}: no index.jsonl here; pass the output folder of a run\n")
    lock = OutputLock(OutputStore(str(folder / "out")).location).acquire()
    try:
        code, _, err = run_cli(capsys, "qc", str(folder / "out"))
    finally:
        lock.release()
    assert code == 3
    assert err.startswith(f"error: {folder / 'out'} is being rendered by another svdflow run (pid ")


@pytest.mark.parametrize(("text", "message"), [
    ("min_motion=2,speed=3", "--thresholds: 'speed=3' is not NAME=VALUE of a qc threshold; use one of min_motion, "
                             "max_motion, max_flicker, max_brightness_jump, min_input_similarity, min_end_similarity, "
                             "max_dark_frames, max_blown_frames, min_sharpness"),
    ("max_dark_frames=1.5", "--thresholds: max_dark_frames='1.5' is not a whole number; write e.g. max_dark_frames=2"),
    ("min_motion=3,max_motion=1", "--thresholds: thresholds: Value error, min_motion 3.0 is above max_motion 1.0: "
                                  "no clip can pass; lower min_motion or raise max_motion"),
])
def test_qc_says_which_threshold_is_wrong(tmp_path, capsys, text, message):
    code, _, err = run_cli(capsys, "qc", str(tmp_path), "--thresholds", text)
    assert (code, err) == (2, f"error: {message}\n")


@pytest.mark.slow  # a builtin:tiny render (once per module) and ffmpeg decodes
def test_qc_of_a_job_whose_master_is_gone_scores_its_mp4_and_says_it_is_lossy(folder, capsys):
    out = folder / "out"
    (out / ".svdflow" / "masters" / "a.mkv").unlink()
    code, _, err = run_cli(capsys, "qc", str(out), "--json")
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("[1/2] a: scored from a.mp4 (a lossy file: no master; its codec's loss is in the "
                               "scores) in ")
    assert lines[1].startswith("[2/2] b: scored from master in ")
    assert lines[2].startswith(f"{out}: 2 jobs: 2 scored (1 from a lossy file: no master); ")
    expected = expected_scores(out, "a", "a.mp4")
    assert recorded(out)["a"]["quality"]["scores"] == expected.model_dump(mode="json")
