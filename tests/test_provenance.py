"""Provenance inside the files: `svdflow inspect FILE` and `svdflow rerender FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli, write_image
from test_run import tiny_manifest
from test_writers import FRAMES

from svdflow.api import run_manifest
from svdflow.outputs.provenance import embedded_text
from svdflow.outputs.writers import hash_output, write_outputs
from svdflow.views import human_bytes

RELEASE = REPO / "tests" / "fixtures" / "release-0.1-smoke"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A swept job `a-m60` in every format, its index and sidecar gone: only the files are left (they
    are kept in `records/`, with the sidecar of a job that failed, its image missing)."""
    folder = tmp_path_factory.mktemp("provenance")
    write_image(folder / "a.png")
    manifest = tiny_manifest(folder, "  - id: a\n    image: a.png\n    sweep: {motion_bucket_id: [60]}\n"
                                     "  - id: gone\n    image: nope.png\n",
                             formats="[mp4, hevc, prores, webm, gif, webp, frames]")
    assert run_manifest(manifest).statuses == {"a-m60": "done", "gone": "failed"}
    out = folder / "out"
    (folder / "entry.json").write_text((out / "a-m60.json").read_text())
    (folder / "records").mkdir()
    for name in ("index.jsonl", "runs.jsonl", "a-m60.json", "gone.json"):
        (out / name).rename(folder / "records" / name)
    return folder


def test_inspect_prints_how_the_file_was_made(rendered, capsys):
    e = json.loads((rendered / "entry.json").read_text())
    path = str(rendered / "out" / "a-m60.mov")

    code, out, err = run_cli(capsys, "inspect", path)

    assert (code, err) == (0, "")
    p = e["params"]
    assert out == f"""\
{path}: job a-m60 of t, svdflow {e["versions"]["svdflow"]}
  item        a, seed {e["seed"]} (derived)
  input       {rendered / "a.png"}
              sha256 {e["input"]["sha256"]}
  model       builtin:tiny, revision none, variant none, loaded builtin-tiny-v1
  parameters  num_frames 4, num_inference_steps 2, fps 7, playback_fps 7.0, motion_bucket_id 60, noise_aug_strength \
0.02, min_guidance_scale 1.0, max_guidance_scale 3.0, width 112, height 64, resize crop, seed {p["seed"]}
  sweep       motion_bucket_id 60
  hardware    cpu, float32, profile cpu, offload none, compile off
  output      mp4, hevc, prores, webm, gif, webp, frames; crf 18; prores_profile hq; masters on
  frames      sha256 {e["frames_sha256"]}
  keys        content {e["key"]}
              render  {e["render_key"]}
              output  {e["output_key"]}
  versions    svdflow {e["versions"]["svdflow"]}, render_version 1, torch {e["versions"]["torch"]}, diffusers \
{e["versions"]["diffusers"]}, transformers {e["versions"]["transformers"]}, python {e["versions"]["python"]}
  manifest    {rendered / "m.yaml"}
render again: svdflow rerender {path} --verify
"""


@pytest.mark.parametrize("name", ["a-m60.mp4", "a-m60.hevc.mp4", "a-m60.mov", "a-m60.webm", "a-m60.gif",
                                  "a-m60.webp", "a-m60_frames", "a-m60_frames/00002.png",
                                  ".svdflow/masters/a-m60.mkv"])
def test_inspect_json_is_the_entry_less_what_writing_the_files_added(rendered, capsys, name):
    entry = json.loads((rendered / "entry.json").read_text())
    code, out, _ = run_cli(capsys, "inspect", str(rendered / "out" / name), "--json")
    assert code == 0
    unknowable = ("status", "outputs", "master", "encoded_from", "timings", "error", "finished_at", "finished_unix")
    assert json.loads(out) == {"svdflow_provenance": 1,
                               **{k: v for k, v in entry.items() if k not in unknowable},
                               "run": {k: v for k, v in entry["run"].items() if k != "id"}}  # recorded after writing


def test_inspect_says_why_a_file_has_no_provenance(tmp_path, capsys):
    write_outputs(FRAMES, str(tmp_path), "plain", ["mp4", "gif"], playback_fps=7)
    (tmp_path / "notes.txt").write_text("hello")
    cases = {
        str(tmp_path / "plain.mp4"): "carries no svdflow provenance (written by another program, or its metadata was "
                                     "stripped); pass a file svdflow wrote, or use `svdflow rerender INDEX "
                                     "--id ID` with the run's index.json",
        str(tmp_path / "plain.gif"): "carries no svdflow provenance (written by another program, or its metadata was "
                                     "stripped); pass a file svdflow wrote, or use `svdflow rerender INDEX "
                                     "--id ID` with the run's index.json",
        str(RELEASE / "city.mp4"): "written by svdflow 0.1, which stored only the content key (107921b4de7d…); use "
                                   "`svdflow rerender INDEX --id ID` with the run's index.json",
        str(tmp_path / "gone.mp4"): "no such file; pass a video, image or frames folder svdflow wrote",
    }
    for path, message in cases.items():
        code, _, err = run_cli(capsys, "inspect", path)
        assert (code, err) == (2, f"error: {path}: {message}\n"), path
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "notes.txt"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'notes.txt'}: not a video or image svdflow can read (")


def test_rerender_needs_an_id_with_an_index_and_the_right_one_with_a_file(rendered, tmp_path, capsys):
    index = rendered / "records" / "index.jsonl"
    code, _, err = run_cli(capsys, "rerender", str(index))
    assert (code, err.splitlines()[-1]) == (2, f"error: {index}: an index holds many jobs; pass --id ID to say which "
                                               "(or pass the job's sidecar <id>.json or one of its files)")
    code, _, err = run_cli(capsys, "rerender", str(rendered / "records"))
    assert (code, err.splitlines()[-1]) == (2, f"error: {rendered / 'records'}: an index holds many jobs; pass --id "
                                               "ID to say which (or pass one of the job's files instead)")
    mp4 = str(rendered / "out" / "a-m60.mp4")
    code, _, err = run_cli(capsys, "rerender", mp4, "--id", "b")
    assert (code, err.splitlines()[-1]) == (2, f"error: {mp4}: made by job 'a-m60', not 'b'; drop --id or pass that "
                                               "job's file")


def test_rerender_from_a_file_alone_writes_the_very_same_files(rendered, capsys):
    entry = json.loads((rendered / "entry.json").read_text())
    webm = rendered / "out" / "a-m60.webm"

    code, out, err = run_cli(capsys, "rerender", str(webm), "--verify", "--json")

    assert code == 0, err
    result = json.loads(out)
    again = rendered / "out" / "rerendered"
    assert result["matches"] is True and result["frames_sha256"] == entry["frames_sha256"]
    assert result["outputs"] == [str(again / f"a-m60{suffix}") for suffix in
                                 (".mp4", ".hevc.mp4", ".mov", ".webm", ".gif", ".webp", "_frames")]
    for output in entry["outputs"]:
        assert hash_output(str(again / output["file"]), output["format"])[0] == output["sha256"], output


def test_inspect_reads_a_sidecar_and_an_index_entry(rendered, tmp_path, capsys):
    """A sidecar shows the job's entry: the provenance its files carry, then what writing them recorded;
    an index.json the same for the job --id names."""
    sidecar = rendered / "entry.json"
    e = json.loads(sidecar.read_text())
    code, file_out, _ = run_cli(capsys, "inspect", str(rendered / "out" / "a-m60.mp4"))
    assert code == 0
    code, out, err = run_cli(capsys, "inspect", str(sidecar))
    assert (code, err) == (0, "")
    provenance_lines = file_out.splitlines()[1:-1]
    t = e["timings"]
    assert out.splitlines() == [
        f"{sidecar}: job a-m60 of t, done, svdflow {e['versions']['svdflow']}", *provenance_lines,
        "  files       " + ", ".join(f"{o['file']} ({human_bytes(o['bytes'])})" for o in e["outputs"]),
        "  master      .svdflow/masters/a-m60.mkv; encoded from render",
        f"  timings     fetch {t['fetch_s']:.2f} s, render {t['render_s']:.2f} s, encode {t['encode_s']:.2f} s, "
        f"total {t['total_s']:.2f} s",
        f"  finished    {e['finished_at']}",
        f"render again: svdflow rerender {rendered} --id a-m60 --verify"]
    code, out, _ = run_cli(capsys, "inspect", str(sidecar), "--json")
    assert (code, json.loads(out)) == (0, e)

    failed = {**e, "id": "b", "item_id": "b", "status": "failed", "outputs": [], "master": None,
              "error": {"type": "InputError", "message": "b.png: file not found; check the path", "stage": "fetch"}}
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"svdflow_index": 2, "jobs": [e, failed]}))
    code, out, _ = run_cli(capsys, "inspect", str(index), "--id", "b")
    assert (code, out) == (0, f"""\
{index}: job b of t, failed, svdflow {e['versions']['svdflow']}
  item        b, seed {e['seed']} ({e['seed_origin']})
  input       {e['input']['uri']}
  error       InputError at fetch: b.png: file not found; check the path
  finished    {e['finished_at']}
""")
    code, out, _ = run_cli(capsys, "inspect", str(index), "--id", "a-m60", "--json")
    assert (code, json.loads(out)) == (0, e)
    (tmp_path / "list.json").write_text("[1]")
    for args, message in [
        ((str(index),), "an index holds many jobs; pass --id ID to say which (or pass the job's sidecar <id>.json or "
                        "one of its files)"),
        ((str(index), "--id", "zz"), "no job 'zz' in this index; known ids: a-m60, b"),
        ((str(sidecar), "--id", "zz"), "the sidecar of job 'a-m60', not 'zz'; drop --id or pass that job's zz.json"),
        ((str(tmp_path / "list.json"),), "not an svdflow sidecar or index.json (not a JSON object); pass a <id>.json "
                                         "or index.json svdflow wrote"),
        ((str(tmp_path / "gone.json"),), "no such file; pass a sidecar <id>.json or an index.json svdflow wrote"),
    ]:
        code, _, err = run_cli(capsys, "inspect", *args)
        assert (code, err) == (2, f"error: {args[0]}: {message}\n"), args


def test_every_json_file_a_real_run_writes_validates_against_its_published_schema(rendered):
    """By jsonschema, not by svdflow's own models: each line of index.jsonl and runs.jsonl, each sidecar
    (a done job's, a failed one's), the provenance in each file; and each schema refuses the other files."""
    import jsonschema

    from svdflow import __version__

    def errors(kind: str, document) -> list[str]:
        schema = json.loads((REPO / "schemas" / f"{kind}.schema.json").read_text())
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        return [e.message for e in validator.iter_errors(document)]

    records = rendered / "records"
    lines = [json.loads(line) for line in (records / "index.jsonl").read_text().splitlines()]
    runs = [json.loads(line) for line in (records / "runs.jsonl").read_text().splitlines()]
    assert [errors("index", line) for line in lines] == [[], []] and [errors("run", run) for run in runs] == [[]]
    assert [(e["id"], e["status"], e["run_id"]) for e in lines] == [("a-m60", "done", runs[0]["id"]),
                                                                    ("gone", "failed", runs[0]["id"])]
    assert runs[0]["versions"]["svdflow"] == __version__ == "0.2.0"
    for job_id in ("a-m60", "gone"):
        assert errors("sidecar", json.loads((records / f"{job_id}.json").read_text())) == [], job_id
    for name in ("a-m60.mp4", "a-m60.hevc.mp4", "a-m60.mov", "a-m60.webm", "a-m60.gif", "a-m60.webp",
                 "a-m60_frames", ".svdflow/masters/a-m60.mkv"):
        provenance = json.loads(embedded_text(str(rendered / "out" / name)))
        assert errors("provenance", provenance) == [], name
        assert provenance["versions"]["svdflow"] == __version__, name
    sidecar = json.loads((records / "a-m60.json").read_text())
    assert errors("sidecar", lines[0]) and errors("index", sidecar) and errors("run", lines[0])
    assert errors("provenance", lines[0])
