"""`svdflow run` end to end on builtin:tiny: real pipeline, real files, a loopback HTTP server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest
from conftest import SVDFLOW, free_port, recorded, run_cli, write_image, write_manifest
from PIL import Image

from svdflow.api import RunOptions, run_manifest
from svdflow.cli import main
from svdflow.outputs.entry import IndexEntry, Provenance
from svdflow.outputs.provenance import read_provenance

TINY_HEADER = """
svdflow: 1
name: t
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
output: {dir: out, formats: FORMATS}
defaults: {num_frames: 4, num_inference_steps: 2, width: 112, height: 64, fps: 7}
items:
"""


def tiny_manifest(folder: Path, items: str, formats: str = "[mp4]", name: str = "m.yaml") -> Path:
    return write_manifest(folder, TINY_HEADER.replace("FORMATS", formats) + items, name)


def entries(folder: Path) -> dict[str, dict]:
    return recorded(folder / "out")


def test_local_and_http_inputs_render_all_formats(tmp_path, http_server):
    write_image(tmp_path / "a.png")
    http_server.routes["/b.png"] = (200, {}, (write_image(tmp_path / "b-src.png", seed=3)).read_bytes())
    manifest = tiny_manifest(tmp_path, f"""
  - id: local
    image: a.png
  - id: remote
    image: {http_server.url('/b.png')}
    motion_bucket_id: 200
""", formats="[mp4, gif, webp, frames]")

    result = run_manifest(manifest)

    assert result.statuses == {"local": "done", "remote": "done"}
    out = tmp_path / "out"
    frames = list(imageio_ffmpeg.read_frames(str(out / "local.mp4")))
    meta, decoded = frames[0], frames[1:]
    assert meta["size"] == (112, 64) and len(decoded) == 4
    assert Image.open(out / "remote.gif").n_frames == 4
    assert Image.open(out / "remote.webp").n_frames == 4
    assert sorted(p.name for p in (out / "local_frames").iterdir()) == [f"{i:05d}.png" for i in range(4)]

    index = entries(tmp_path)
    local = index["local"]
    assert local["status"] == "done" and local["error"] is None
    assert local["input"]["uri"] == str(tmp_path / "a.png")
    assert local["input"]["sha256"] == __import__("hashlib").sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    assert local["model"]["source"] == "builtin:tiny"
    assert local["hardware"]["device"] == "cpu" and local["hardware"]["dtype"] == "float32"
    assert [o["format"] for o in local["outputs"]] == ["mp4", "gif", "webp", "frames"]
    assert set(local["timings"]) >= {"fetch_s", "render_s", "encode_s", "total_s"}
    assert set(local["versions"]) >= {"svdflow", "torch", "diffusers", "transformers", "python"}
    assert index["remote"]["params"]["motion_bucket_id"] == 200
    provenance = Provenance.of(IndexEntry.model_validate(local))
    for name in ("local.mp4", "local.gif", "local.webp", "local_frames", "local_frames/00003.png",
                 ".svdflow/masters/local.mkv"):
        assert read_provenance(str(out / name)) == provenance, name
    sidecar = json.loads((out / "local.json").read_text())
    assert sidecar == local


def test_bad_inputs_fail_only_their_own_job(tmp_path, http_server):
    write_image(tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("this is not an image")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    http_server.routes["/huge.png"] = (200, {"Content-Length": str(10**10)}, b"")
    refused = f"http://127.0.0.1:{free_port()}/a.png"
    manifest = tiny_manifest(tmp_path, f"""
  - id: good
    image: good.png
  - id: missing-file
    image: nope.png
  - id: http-404
    image: {http_server.url('/missing.png')}
  - id: refused
    image: {refused}
  - id: text-file
    image: notes.png
  - id: truncated
    image: cut.png
  - id: one-pixel
    image: dot.png
  - id: oversize
    image: {http_server.url('/huge.png')}
""")
    result = run_manifest(manifest)

    assert result.statuses["good"] == "done"
    assert result.count("failed") == 7 and result.exit_code == 1
    errors = {k: e["error"]["message"] for k, e in entries(tmp_path).items() if e["status"] == "failed"}
    assert errors["missing-file"] == (f"{tmp_path}/nope.png: file not found; check the path (relative paths are "
                                      "resolved against the manifest's folder)")
    assert errors["http-404"] == f"{http_server.url('/missing.png')}: HTTP 404 Not Found; check the URL"
    assert errors["refused"].startswith(f"{refused}: could not connect after 3 attempts")
    assert errors["text-file"].startswith(f"{tmp_path}/notes.png: not a readable image")
    assert errors["truncated"].startswith(f"{tmp_path}/cut.png: image data is truncated or corrupt")
    assert errors["one-pixel"] == (f"{tmp_path}/dot.png: image is 1x1 pixels, smaller than the 16-pixel minimum "
                                   "side; use a larger image")
    assert "larger than the 67108864-byte limit" in errors["oversize"]
    assert all(e["error"]["stage"] == "fetch" for k, e in entries(tmp_path).items() if k != "good")


def test_rerun_skips_up_to_date_and_renders_only_what_changed(tmp_path):
    write_image(tmp_path / "a.png")
    body = """
  - id: one
    image: a.png
  - id: two
    image: a.png
    motion_bucket_id: MOTION
"""
    manifest = tiny_manifest(tmp_path, body.replace("MOTION", "100"))
    assert run_manifest(manifest).count("done") == 2
    first = entries(tmp_path)

    again = run_manifest(manifest)
    assert again.statuses == {"one": "up to date", "two": "up to date"}

    tiny_manifest(tmp_path, body.replace("MOTION", "150"))
    changed = run_manifest(manifest)
    assert changed.statuses == {"one": "up to date", "two": "done"}
    assert entries(tmp_path)["one"] == first["one"]

    forced = run_manifest(manifest, RunOptions(force=True))
    assert forced.statuses == {"one": "done", "two": "done"}


@pytest.mark.slow
def test_cli_run_exit_codes_and_json_events(tmp_path):
    write_image(tmp_path / "a.png")
    manifest = tiny_manifest(tmp_path, """
  - id: ok
    image: a.png
  - id: broken
    image: missing.png
""")
    proc = subprocess.run([*SVDFLOW, "run", str(manifest), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {e["id"]: e["status"] for e in events if e["event"] == "job_finished"} == {"ok": "done", "broken": "failed"}
    assert [e["step"] for e in events if e["event"] == "job_step"] == [1, 2]
    assert events[-1]["rendered"] == 1 and events[-1]["failed"] == 1 and events[-1]["exit_code"] == 1
    assert "Traceback" not in proc.stderr
    assert "[2/2] broken: FAILED:" in proc.stderr

    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(manifest), "--only", "ok"])
    assert exit_info.value.code == 0


def test_seeds_and_frames_do_not_depend_on_order_or_subset(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=5)
    items = ["  - id: first\n    image: ../a.png\n", "  - id: second\n    image: ../b.png\n    seed: 9\n"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    run_manifest(tiny_manifest(one, "".join(items)))
    run_manifest(tiny_manifest(two, "".join(reversed(items))), RunOptions(only=("second",)))
    run_manifest(tiny_manifest(two, "".join(reversed(items))), RunOptions(only=("first",)))
    a, b = entries(one), entries(two)
    for job_id in ("first", "second"):
        assert a[job_id]["frames_sha256"] == b[job_id]["frames_sha256"]
        assert a[job_id]["seed"] == b[job_id]["seed"]
    assert a["first"]["status"] == "done"
    assert a["first"]["frames_sha256"] != a["second"]["frames_sha256"]


def test_missing_model_is_an_environment_error_and_records_nothing(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    manifest = write_manifest(tmp_path, TINY_HEADER.replace('"builtin:tiny"', "./models/svd")
                              .replace("FORMATS", "[mp4]") + "  - {id: one, image: a.png}\n")

    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(manifest)])

    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert (f"error: model.source: ./models/svd ({tmp_path}/models/svd): no such folder; relative paths are read "
            "from the manifest's folder. Fix the path, or give a hub id (org/name) to download the model.\n") in err
    assert "Traceback" not in err
    assert entries(tmp_path) == {}


def test_run_summary_prints_each_failure_whole_on_one_line(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    manifest = tiny_manifest(tmp_path, "  - id: ok\n    image: a.png\n  - id: gone\n    image: nope.png\n")

    code, _, err = run_cli(capsys, "run", str(manifest))

    assert code == 1
    assert (f"failed: gone: {tmp_path}/nope.png: file not found; check the path (relative paths are resolved "
            "against the manifest's folder)") in err.splitlines()
