"""The record as a public format: typed entries, one per line, the release's files still load, and are upgraded."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import REPO, index_lines, recorded, write_manifest
from PIL import Image

from svdflow.api import RunIndex, load_run_spec, plan_run, run_manifest
from svdflow.errors import EnvironmentProblem
from svdflow.outputs.entry import INDEX_FORMAT, IndexEntry, Provenance
from svdflow.outputs.provenance import read_provenance
from svdflow.outputs.store import OutputStore
from svdflow.pipeline.session import PipelineSession

# `make demo`'s folder as svdflow 0.1.0 (commit 58f0b70) writes it under the kernel pins of conftest.py:
# git worktree add /tmp/svdflow-release-0.1 58f0b70 && cd /tmp/svdflow-release-0.1 && ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 PYTHONPATH=. <venv>/bin/python -m svdflow run manifests/smoke.yaml
RELEASE = REPO / "tests" / "fixtures" / "release-0.1-smoke"
VOLATILE = ("timings", "finished_at", "finished_unix")


def smoke_campaign(tmp_path, output_dir: str = "renders/{name}"):
    """manifests/smoke.yaml and its images in a folder of their own, writing to `output_dir`."""
    shutil.copytree(REPO / "manifests" / "images", tmp_path / "images")
    text = (REPO / "manifests" / "smoke.yaml").read_text().replace("dir: renders/{name}", f"dir: {output_dir}")
    return write_manifest(tmp_path, text, "smoke.yaml")


def jobs(folder) -> dict[str, dict]:
    """The entries of a format 1 or 2 index.json."""
    return {e["id"]: e for e in json.loads((folder / "index.json").read_text())["jobs"]}


def gif_frames(path) -> list[bytes]:
    """A GIF's frames as decoded RGB bytes."""
    with Image.open(path) as im:
        return [(im.seek(i), im.convert("RGB").tobytes())[1] for i in range(im.n_frames)]


@pytest.mark.slow  # the smoke campaign's three jobs rendered: several seconds
def test_make_demo_writes_the_frames_the_release_wrote(tmp_path):
    """Since the release no rendered pixel changed: every job's frames, its keys (format 2 derives them
    from the release's key material) and every GIF's decoded frames. The files' bytes did change, on
    purpose: each carries its provenance (0.2), the mp4s are BT.709 (0.1 converted with BT.601, untagged),
    and the GIFs' delays add up to the clip's length and their frames no longer repeat the palette."""
    manifest = smoke_campaign(tmp_path)
    assert run_manifest(manifest).statuses == {"sunset": "done", "rocket": "done", "city": "done"}
    out, release = tmp_path / "renders" / "smoke", jobs(RELEASE)
    upgraded = RunIndex.load(OutputStore(str(RELEASE))).entries
    now = recorded(out)
    for job_id, released in release.items():
        entry = now[job_id]
        assert entry["frames_sha256"] == released["frames_sha256"], job_id
        assert (entry["key"], entry["render_key"], entry["output_key"]) == (
            upgraded[job_id].key, upgraded[job_id].render_key, upgraded[job_id].output_key), job_id
        assert [(o["format"], o["file"]) for o in entry["outputs"]] == [("mp4", f"{job_id}.mp4"), ("gif", f"{job_id}.gif")]
        assert gif_frames(out / f"{job_id}.gif") == gif_frames(RELEASE / f"{job_id}.gif"), job_id
        for name in (f"{job_id}.mp4", f"{job_id}.gif", entry["master"]["file"]):
            assert read_provenance(str(out / name)) == Provenance.of(IndexEntry.model_validate(entry)), name
        # quality: every job is scored since 0.3; the release's entries have no scores.
        volatile = VOLATILE + ("input", "run", "versions", "outputs", "master", "output", "quality")
        assert entry["quality"]["scores"]["frames"] == entry["params"]["num_frames"]
        assert ({k: v for k, v in entry.items() if k not in volatile}
                == {k: v for k, v in upgraded[job_id].model_dump(mode="json").items() if k not in volatile})
        assert entry["output"] == {"formats": ["mp4", "gif"], "crf": 18, "prores_profile": "hq", "masters": True}


def test_the_tests_render_with_the_kernels_conftest_pins():
    """The fixture's frames were rendered with ATen's AVX2 kernels: on an AVX-512 machine torch would
    pick its AVX-512 ones unless conftest's pin was read before torch ran its first kernel."""
    import torch

    assert (torch.backends.cpu.get_cpu_capability(), os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["MKL_CBWR"]) == (
        "AVX2", "AVX2", "AVX2")


def test_the_release_index_loads_is_up_to_date_and_is_upgraded_on_the_next_write(tmp_path, monkeypatch):
    """A campaign rendered by 0.1 has no masters. Its jobs stay up to date (their keys come out the same
    from the 0.1 material) and the plan says they have no master: rendering them again only to keep
    one would re-render a whole campaign because svdflow was upgraded, and a lossy mp4 cannot become a
    lossless master. A change of their files renders them again (there is nothing to re-encode from),
    and that render keeps a master."""
    shutil.copytree(RELEASE, tmp_path / "renders" / "smoke")
    manifest = smoke_campaign(tmp_path)
    spec = load_run_spec(manifest)

    no_master = "no master; a change of its files will render it again"
    assert [(p.job.id, p.status, p.reason) for p in plan_run(spec)] == [
        ("sunset", "up to date", no_master), ("rocket", "up to date", no_master), ("city", "up to date", no_master)]
    index = RunIndex.load(OutputStore(spec.output_dir))
    assert (index.format_read, index.skipped, list(index.entries)) == (1, [], ["sunset", "rocket", "city"])
    assert all(isinstance(entry, IndexEntry) and entry.master is None for entry in index.entries.values())

    monkeypatch.setattr(PipelineSession, "load", never_built)
    result = run_manifest(manifest)
    assert result.statuses == {"sunset": "up to date", "rocket": "up to date", "city": "up to date"}
    out = tmp_path / "renders" / "smoke"
    assert not (out / "index.json").exists()  # upgraded: index.jsonl and runs.jsonl hold it now
    [run] = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert (run["svdflow_index"], run["id"][:7], run["started_at"]) == (INDEX_FORMAT, "legacy-", None) == (3, "legacy-",
                                                                                                          None)
    assert [line["run_id"] for line in index_lines(out).values()] == [run["id"]] * 3
    release = json.loads((RELEASE / "index.json").read_text())["jobs"]
    new_fields = ("key", "render_key", "output_key", "key_material", "output", "master", "encoded_from")
    written = recorded(out)
    assert list(written) == ["sunset", "rocket", "city"]
    for before, after in zip(release, written.values(), strict=True):  # nothing lost on the way
        # (params included: parameters added since 0.1, segments and loop among them, are left out at their
        # defaults, and so is an entry's segments while it is a single clip)
        assert {k: v for k, v in after.items() if k not in new_fields} == {
            **{k: v for k, v in before.items() if k not in new_fields}, "run": {**before["run"], "id": run["id"]}}
        assert after["key_material"]["render"]["params"] == {
            k: v for k, v in before["params"].items() if k != "playback_fps"}
        assert after["key_material"]["output"] == {"formats": ["gif", "mp4"], "params": {"playback_fps": 7.0},
                                                   "crf": 18}
        assert (after["output"], after["master"], after["encoded_from"]) == (
            {"formats": ["mp4", "gif"], "crf": 18, "prores_profile": "hq", "masters": False}, None, "render")

    manifest.write_text(manifest.read_text().replace("formats: [mp4, gif]", "formats: [mp4, gif]\n  crf: 23"))
    assert {(p.status, p.reason) for p in plan_run(load_run_spec(manifest))} == {
        ("changed", "crf 18 -> 23; no master to re-encode from: rendering again")}


def never_built(self):
    raise AssertionError("the pipeline was built")


def test_an_index_from_a_newer_svdflow_is_refused_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text(json.dumps({"svdflow_index": 99, "jobs": []}))
    with pytest.raises(EnvironmentProblem) as raised:
        RunIndex.load(OutputStore(str(out)))
    assert str(raised.value) == (f"{out}/index.json: index format 99 was written by a newer svdflow (this one reads "
                                 "format 3); upgrade svdflow (pip install -U svdflow) to use this folder")
    assert json.loads((out / "index.json").read_text())["svdflow_index"] == 99
    (out / "index.json").unlink()
    (out / "runs.jsonl").write_text(json.dumps({"svdflow_index": 4, "id": "x"}) + "\n")
    with pytest.raises(EnvironmentProblem) as raised:
        RunIndex.load(OutputStore(str(out)))
    assert str(raised.value) == (f"{out}/runs.jsonl: index format 4 was written by a newer svdflow (this one reads "
                                 "format 3); upgrade svdflow (pip install -U svdflow) to use this folder")


def test_an_entry_that_does_not_fit_the_format_is_left_out_and_said(tmp_path):
    out = tmp_path / "out"
    shutil.copytree(RELEASE, out)
    document = json.loads((out / "index.json").read_text())
    document["jobs"][1]["seed_origin"] = "guessed"
    (out / "index.json").write_text(json.dumps(document))
    for sidecar in ("sunset.json", "rocket.json", "city.json"):
        (out / sidecar).unlink()

    index = RunIndex.load(OutputStore(str(out)))
    assert list(index.entries) == ["sunset", "city"]
    assert index.skipped == ["index.json: job 'rocket': seed_origin: Input should be 'item', 'sweep' or 'derived'"]
