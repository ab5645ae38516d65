"""Lossless masters and re-encoding: an output-only change encodes the files again from each job's
master without building the pipeline; a missing or damaged master falls back to a render."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
from conftest import recorded, run_cli, write_image
from test_run import tiny_manifest
from test_writers import make_frames

from svdflow.api import load_run_spec, plan_run, read_provenance, run_manifest
from svdflow.errors import MasterError
from svdflow.outputs.entry import MasterRecord
from svdflow.outputs.masters import master_problem, read_master, write_master
from svdflow.outputs.store import OutputStore
from svdflow.pipeline.session import PipelineSession
from svdflow.run.keys import frames_sha256

THREE = "  - id: a\n    image: a.png\n  - id: b\n    image: a.png\n    seed: 7\n  - id: c\n    image: a.png\n" \
        "    motion_bucket_id: 60\n"
FORMATS = "[mp4, webm, gif, frames]"


def never_built(self):
    raise AssertionError("the pipeline was built")


def entries(folder: Path) -> dict[str, dict]:
    return recorded(folder / "out")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan(manifest: Path) -> list[tuple[str, str, str]]:
    return [(p.job.id, p.status, p.reason) for p in plan_run(load_run_spec(manifest))]


def set_output(manifest: Path, setting: str) -> None:
    text = manifest.read_text()
    manifest.write_text(text.replace(f"formats: {FORMATS}", f"formats: {FORMATS}, {setting}", 1))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    """Three jobs rendered with masters in a working folder, then kept aside as they were."""
    base = tmp_path_factory.mktemp("masters")
    work = base / "work"
    write_image(work / "a.png")
    manifest = tiny_manifest(work, THREE, formats=FORMATS)
    assert run_manifest(manifest).statuses == {"a": "done", "b": "done", "c": "done"}
    shutil.copytree(work, base / "pristine")
    return work, base / "pristine"


@pytest.fixture
def copy(pristine) -> Path:
    """The rendered campaign, afresh, at the path it was rendered in: the paths the files' provenance
    names (manifest, input) are still true, so re-encoded files can be compared byte for byte."""
    work, kept = pristine
    shutil.rmtree(work)
    shutil.copytree(kept, work)
    return work


@pytest.fixture
def campaign(copy) -> Path:
    return copy


def test_every_rendered_job_keeps_a_master_that_holds_its_frames(campaign):
    out = campaign / "out"
    for job_id, entry in entries(campaign).items():
        master = entry["master"]
        assert master == {"file": f".svdflow/masters/{job_id}.mkv", "codec": "ffv1",
                          "sha256": sha256(out / master["file"]), "bytes": (out / master["file"]).stat().st_size}
        frames = read_master(OutputStore(str(out)), MasterRecord(**master), 112, 64)
        assert frames.shape == (4, 64, 112, 3) and frames_sha256(frames) == entry["frames_sha256"]
        assert read_provenance(str(out / master["file"])).frames_sha256 == entry["frames_sha256"]


def test_a_crf_change_re_encodes_every_job_and_renders_none(copy, monkeypatch):
    before = entries(copy)
    manifest = copy / "m.yaml"
    set_output(manifest, "crf: 23")
    assert plan(manifest) == [(job_id, "re-encode", "crf 18 -> 23") for job_id in "abc"]

    monkeypatch.setattr(PipelineSession, "load", never_built)
    result = run_manifest(manifest)
    assert result.statuses == {"a": "re-encoded", "b": "re-encoded", "c": "re-encoded"}
    summary = result.summary()
    assert (summary["rendered"], summary["re_encoded"], summary["up_to_date"], summary["failed"]) == (0, 3, 0, 0)
    masters = sorted((copy / "out" / ".svdflow" / "masters").iterdir())
    assert summary["masters_bytes"] == sum(path.stat().st_size for path in masters) > 0

    after = entries(copy)
    for job_id, entry in after.items():
        old = before[job_id]
        assert entry["encoded_from"] == "master"
        for same in ("render_key", "frames_sha256", "master", "hardware", "versions", "model"):
            assert entry[same] == old[same], same
        assert entry["output_key"] != old["output_key"] and entry["output"]["crf"] == 23
        assert "render_s" not in entry["timings"]
        assert read_provenance(str(copy / "out" / f"{job_id}.mp4")).output.crf == 23
        mp4 = {o["format"]: o for o in entry["outputs"]}["mp4"]
        assert mp4["sha256"] != {o["format"]: o for o in old["outputs"]}["mp4"]["sha256"]
    assert [p[1] for p in plan(manifest)] == ["up to date"] * 3

    # And back: the files are the very ones the render wrote (same frames, same settings, same provenance).
    manifest.write_text(manifest.read_text().replace(", crf: 23", ""))
    assert run_manifest(manifest).statuses == {"a": "re-encoded", "b": "re-encoded", "c": "re-encoded"}
    assert {job_id: e["outputs"] for job_id, e in entries(copy).items()} == {
        job_id: e["outputs"] for job_id, e in before.items()}


def test_a_removed_output_is_re_encoded_from_the_master(copy, monkeypatch):
    recorded = entries(copy)["b"]["outputs"]
    (copy / "out" / "b.webm").unlink()
    shutil.rmtree(copy / "out" / "b_frames")
    assert plan(copy / "m.yaml")[1] == ("b", "re-encode", "an output file was removed or replaced")
    monkeypatch.setattr(PipelineSession, "load", never_built)
    assert run_manifest(copy / "m.yaml").statuses == {"a": "up to date", "b": "re-encoded", "c": "up to date"}
    assert entries(copy)["b"]["outputs"] == recorded


def test_a_deleted_master_renders_only_that_job_again(copy):
    master = copy / "out" / ".svdflow" / "masters" / "b.mkv"
    recorded = sha256(master)
    master.unlink()
    assert plan(copy / "m.yaml") == [("a", "up to date", ""),
                                     ("b", "master missing", "master .svdflow/masters/b.mkv is missing"),
                                     ("c", "up to date", "")]
    assert run_manifest(copy / "m.yaml").statuses == {"a": "up to date", "b": "done", "c": "up to date"}
    assert sha256(master) == recorded  # FFV1 with fixed slices: the same frames give the same master


def test_a_damaged_master_falls_back_to_a_render_said_in_the_plan(copy):
    master = copy / "out" / ".svdflow" / "masters" / "b.mkv"
    data = bytearray(master.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, other bytes
    master.write_bytes(bytes(data))
    damaged = hashlib.sha256(data).hexdigest()
    recorded = entries(copy)["b"]["master"]["sha256"]
    manifest = copy / "m.yaml"
    set_output(manifest, "crf: 23")
    assert plan(manifest) == [
        ("a", "re-encode", "crf 18 -> 23"),
        ("b", "changed", f"crf 18 -> 23; master .svdflow/masters/b.mkv is damaged (sha256 {damaged[:12]}, recorded "
                         f"{recorded[:12]}): rendering again"),
        ("c", "re-encode", "crf 18 -> 23")]
    before = entries(copy)["b"]
    assert run_manifest(manifest).statuses == {"a": "re-encoded", "b": "done", "c": "re-encoded"}
    after = entries(copy)["b"]
    assert after["frames_sha256"] == before["frames_sha256"] and after["master"]["sha256"] == sha256(master)
    assert plan(manifest) == [(job_id, "up to date", "") for job_id in "abc"]


def test_a_master_that_does_not_give_back_the_frames_fails_the_job_and_the_next_run_renders_it(copy):
    """The plan trusts a master whose bytes are the recorded ones; the re-encode still checks the
    frames it decodes (here a's record names c's master, bytes and all)."""
    out = copy / "out"
    by_id = recorded(out)
    by_id["a"]["master"] = by_id["c"]["master"]
    (out / "a.json").write_text(json.dumps(by_id["a"]))
    # and a's line in index.jsonl (at rest, with no writer's trace left, index.jsonl is the record)
    lines = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    lines[0]["master"] = by_id["c"]["master"]
    (out / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = copy / "m.yaml"
    set_output(manifest, "crf: 23")

    result = run_manifest(manifest)
    assert result.statuses == {"a": "failed", "b": "re-encoded", "c": "re-encoded"}
    c_frames = by_id["c"]["frames_sha256"]
    assert result.errors["a"] == (f"job 'a': master .svdflow/masters/c.mkv does not hold the recorded frames (sha256 "
                                  f"{c_frames[:12]}, recorded {by_id['a']['frames_sha256'][:12]}); run again to "
                                  "render it")
    assert entries(copy)["a"]["error"]["stage"] == "encode"
    assert run_manifest(manifest).statuses == {"a": "done", "b": "up to date", "c": "up to date"}
    assert entries(copy)["a"]["frames_sha256"] == by_id["a"]["frames_sha256"]


def test_masters_false_keeps_none_and_output_changes_render(copy):
    manifest = copy / "m.yaml"
    set_output(manifest, "masters: false")
    assert [p[1] for p in plan(manifest)] == ["up to date"] * 3  # masters are not part of any key
    set_output(manifest, "crf: 23")
    assert plan(manifest)[0] == ("a", "changed", "crf 18 -> 23; masters are off: rendering again")
    result = run_manifest(manifest)
    assert result.statuses == {"a": "done", "b": "done", "c": "done"} and result.summary()["masters_bytes"] == 0
    assert all(e["master"] is None and e["output"]["masters"] is False for e in entries(copy).values())
    # A job rendered without a master loses the one it had: it would hold the old render.
    assert list((copy / "out" / ".svdflow" / "masters").iterdir()) == []


def test_the_summary_counts_re_encoded_jobs_and_states_the_masters_size(copy, capsys):
    set_output(copy / "m.yaml", "crf: 23")
    code, _, err = run_cli(capsys, "run", str(copy / "m.yaml"))
    assert code == 0
    lines = err.splitlines()
    size = sum(path.stat().st_size for path in (copy / "out" / ".svdflow" / "masters").iterdir())
    assert lines[-2].startswith("0 rendered, 3 re-encoded, 0 up to date, 0 failed in ") and lines[-2].endswith(
        f"s -> {copy / 'out'}")
    assert lines[-1] == f"masters: {size / 1024:.1f} KiB in .svdflow/masters/"
    assert "c: re-encoded in " in err


@pytest.mark.slow  # two runs and three plans on a remote folder: several seconds
def test_masters_work_in_a_remote_output_folder(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png")
    url = f"memory://svdflow-masters/{tmp_path.name}/out"
    manifest = tiny_manifest(tmp_path, "  - id: a\n    image: a.png\n", formats="[mp4, frames]")
    manifest.write_text(manifest.read_text().replace("dir: out", f"dir: {url}"))
    assert run_manifest(manifest).statuses == {"a": "done"}
    set_output_text = manifest.read_text().replace("formats: [mp4, frames]", "formats: [mp4, frames], crf: 25")
    manifest.write_text(set_output_text)
    with monkeypatch.context() as patched:
        patched.setattr(PipelineSession, "load", never_built)
        assert plan(manifest) == [("a", "re-encode", "crf 18 -> 25")]
        assert run_manifest(manifest).statuses == {"a": "re-encoded"}
    fsspec.filesystem("memory").rm(f"/svdflow-masters/{tmp_path.name}/out/.svdflow/masters/a.mkv")
    # a remote folder's masters are taken as recorded (not listed) until a re-encode needs one
    assert plan(manifest) == [("a", "up to date", "")]
    manifest.write_text(set_output_text.replace("crf: 25", "crf: 26"))
    assert plan(manifest) == [("a", "changed", "crf 25 -> 26; master .svdflow/masters/a.mkv is missing: rendering again")]


@pytest.mark.slow  # a new process that imports svdflow and runs the campaign
def test_a_re_encode_imports_no_torch(copy):
    set_output(copy / "m.yaml", "crf: 23")
    script = ("import json, sys\nfrom svdflow.api import run_manifest\nresult = run_manifest(sys.argv[1])\n"
              "print(json.dumps([result.statuses, sorted(m for m in sys.modules if m.split('.')[0] in "
              "('torch', 'diffusers', 'transformers'))]))")
    proc = subprocess.run([sys.executable, "-c", script, str(copy / "m.yaml")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"a": "re-encoded", "b": "re-encoded", "c": "re-encoded"}, []]


def test_masters_are_exact_at_any_size_and_damage_is_found(tmp_path):
    store = OutputStore(str(tmp_path))
    frames = make_frames(t=3, h=63, w=37)  # odd sides: FFV1 in planar RGB does not subsample
    record = write_master(frames, store, "odd", fps=7, provenance="")
    assert record.file == ".svdflow/masters/odd.mkv" and master_problem(store, record, verify=True) is None
    np.testing.assert_array_equal(read_master(store, record, 37, 63), frames)

    path = tmp_path / record.file
    path.write_bytes(path.read_bytes()[: record.bytes // 2])
    assert master_problem(store, record, verify=False) == (
        f"master .svdflow/masters/odd.mkv has {record.bytes // 2} bytes, recorded {record.bytes}")
    assert len(read_master(store, record, 37, 63)) < 3  # what a re-encode then finds in its frames' hash
    path.write_bytes(b"not a master at all")
    with pytest.raises(MasterError, match=r"^master \.svdflow/masters/odd\.mkv could not be decoded \(.+\)$"):
        read_master(store, record, 37, 63)
