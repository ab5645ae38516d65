"""One answer to "local path or URL?" for inputs, outputs, the lock and the report."""

from __future__ import annotations

import os

import pytest

from svdflow.locations import Location, is_url


@pytest.mark.parametrize("text", ["renders/x", "/abs/renders", "~/x", "notes::draft.png", "a::b::c.png",
                                  "file:///abs/renders", "local:///abs/renders"])
def test_local_paths(text):
    assert not is_url(text)
    assert Location.parse(text).is_local


@pytest.mark.parametrize("text, protocols", [
    ("memory://x", ("memory",)),
    ("s3://bucket/key", ("s3",)),
    ("simplecache::s3://bucket/key", ("simplecache", "s3")),
    ("simplecache::memory://bucket/x", ("simplecache", "memory")),
    ("filecache::simplecache::gs://b/k", ("filecache", "simplecache", "gs")),
    ("simplecache::file:///abs/city.png", ("simplecache", "file")),
    ("https://example.org/a.png", ("https",)),
])
def test_urls_keep_their_text_and_name_where_the_bytes_live(text, protocols):
    location = Location.parse(text, base="/manifests")
    assert is_url(text)
    assert (location.text, location.protocols, location.protocol) == (text, protocols, protocols[-1])
    with pytest.raises(ValueError, match="is a URL, not a local path"):
        _ = location.path


def test_local_paths_resolve_against_the_base_and_join_names():
    assert Location.parse("images/a.png", base="/m").path == "/m/images/a.png"
    assert Location.parse("/abs/a.png", base="/m").path == "/abs/a.png"
    assert Location.parse("~/a.png", base="/m").path == os.path.expanduser("~/a.png")
    assert Location.parse("file:///abs/out", base="/m").path == "/abs/out"
    assert Location.parse("notes::draft.png", base="/m").path == "/m/notes::draft.png"
    assert Location.parse("/out").join("a.mp4").text == "/out/a.mp4"
    assert Location.parse("simplecache::memory://bucket/x/").join("a.mp4").text == "simplecache::memory://bucket/x/a.mp4"


def test_chained_urls_work_for_inputs_and_for_the_output_folder(tmp_path, monkeypatch):
    """`simplecache::file://` inputs are read through fsspec's cache; a `simplecache::memory://` output
    folder is written in memory://, not planned into a folder named after the URL."""
    import fsspec
    from conftest import write_image, write_manifest

    from svdflow.api import load_run_spec, plan_run, run_manifest

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the remote folder's lock lives here
    image = write_image(tmp_path / "pictures" / "city.png", 64, 64)
    manifest = write_manifest(tmp_path, f"""
svdflow: 1
name: chained
model: {{source: "builtin:tiny"}}
hardware: {{profile: cpu}}
output: {{dir: "simplecache::memory://bucket/{{name}}", formats: [gif]}}
defaults: {{num_frames: 2, num_inference_steps: 2, width: 64, height: 64}}
items:
  - {{id: city, image: "simplecache::file://{image}"}}
""")
    spec = load_run_spec(manifest)
    assert spec.output_dir == "simplecache::memory://bucket/chained"
    assert spec.jobs[0].image == f"simplecache::file://{image}"
    assert [p.status for p in plan_run(spec)] == ["new"]

    assert run_manifest(spec).statuses == {"city": "done"}
    memory = fsspec.filesystem("memory")
    assert sorted(memory.ls("/bucket/chained", detail=False)) == [
        "/bucket/chained/.svdflow", "/bucket/chained/city.gif", "/bucket/chained/city.json",
        "/bucket/chained/index.jsonl", "/bucket/chained/runs.jsonl"]
    assert memory.ls("/bucket/chained/.svdflow/masters", detail=False) == ["/bucket/chained/.svdflow/masters/city.mkv"]
    assert not any(p.name.startswith("simplecache") for p in tmp_path.rglob("*"))
    assert [p.status for p in plan_run(spec)] == ["up to date"]
    memory.rm("/bucket", recursive=True)
