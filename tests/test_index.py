"""The index as a public format: typed entries, the release's files still load, and are upgraded."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, write_manifest

from svdflow.api import RunIndex, load_run_spec, plan_run, run_manifest
from svdflow.errors import EnvironmentProblem
from svdflow.outputs.entry import INDEX_FORMAT, IndexEntry
from svdflow.outputs.store import OutputStore

RELEASE = REPO / "tests" / "fixtures" / "release-0.1-smoke"  # `make demo`'s folder, written by svdflow 0.1.0
VOLATILE = ("timings", "finished_at", "finished_unix")


def smoke_campaign(tmp_path, output_dir: str = "renders/{name}"):
    """manifests/smoke.yaml and its images in a folder of their own, writing to `output_dir`."""
    shutil.copytree(REPO / "manifests" / "images", tmp_path / "images")
    text = (REPO / "manifests" / "smoke.yaml").read_text().replace("dir: renders/{name}", f"dir: {output_dir}")
    return write_manifest(tmp_path, text, "smoke.yaml")


def jobs(folder) -> dict[str, dict]:
    return {e["id"]: e for e in json.loads((folder / "index.json").read_text())["jobs"]}


def test_make_demo_writes_the_bytes_the_release_wrote(tmp_path):
    """The redesign changed no pixel and no byte: every file of `make demo`, and every key."""
    manifest = smoke_campaign(tmp_path)
    assert run_manifest(manifest).statuses == {"sunset": "done", "rocket": "done", "city": "done"}
    out, release = tmp_path / "renders" / "smoke", jobs(RELEASE)
    now = jobs(out)
    for job_id, recorded in release.items():
        assert now[job_id]["frames_sha256"] == recorded["frames_sha256"], job_id
        assert now[job_id]["key"] == recorded["key"], job_id
        assert now[job_id]["outputs"] == recorded["outputs"], job_id
        for output in recorded["outputs"]:
            assert (out / output["file"]).read_bytes() == (RELEASE / output["file"]).read_bytes(), output["file"]
        same_shape = {k: v for k, v in now[job_id].items() if k not in VOLATILE + ("input", "run", "versions")}
        assert same_shape == {k: v for k, v in recorded.items() if k not in VOLATILE + ("input", "run", "versions")}
        assert list(now[job_id]) == list(recorded)  # the same keys in the same order


def test_the_release_index_loads_is_up_to_date_and_is_upgraded_on_the_next_write(tmp_path):
    shutil.copytree(RELEASE, tmp_path / "renders" / "smoke")
    manifest = smoke_campaign(tmp_path)
    spec = load_run_spec(manifest)

    assert [(p.job.id, p.status) for p in plan_run(spec)] == [
        ("sunset", "up to date"), ("rocket", "up to date"), ("city", "up to date")]
    index = RunIndex.load(OutputStore(spec.output_dir))
    assert (index.format_read, index.skipped, list(index.entries)) == (1, [], ["sunset", "rocket", "city"])
    assert all(isinstance(entry, IndexEntry) for entry in index.entries.values())

    result = run_manifest(manifest)
    assert result.statuses == {"sunset": "up to date", "rocket": "up to date", "city": "up to date"}
    written = json.loads((tmp_path / "renders" / "smoke" / "index.json").read_text())
    assert written["svdflow_index"] == INDEX_FORMAT
    assert written["jobs"] == json.loads((RELEASE / "index.json").read_text())["jobs"]  # nothing lost on the way


def test_an_index_from_a_newer_svdflow_is_refused_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text(json.dumps({"svdflow_index": 99, "jobs": []}))
    with pytest.raises(EnvironmentProblem) as raised:
        RunIndex.load(OutputStore(str(out)))
    assert str(raised.value) == (f"{out}/index.json: index format 99 was written by a newer svdflow (this one reads "
                                 "format 1); upgrade svdflow (pip install -U svdflow) to use this folder")
    assert json.loads((out / "index.json").read_text())["svdflow_index"] == 99


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
