"""The record grows by appending (sealed parts, compacted at a run's end), is read by people's tools
as JSON Lines, and a rerun of an unchanged campaign reads no input byte and decodes nothing."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest
from conftest import index_lines, recorded, run_cli, write_image, write_manifest
from PIL import Image

from svdflow.api import RunIndex, load_run_spec, plan_run, run_manifest
from svdflow.outputs import index as index_module
from svdflow.outputs.store import OutputStore
from svdflow.run import executor as executor_module
from svdflow.run import input_hashes

MANIFEST = """svdflow: 1
name: r
model: {source: 'builtin:tiny'}
hardware: {profile: cpu}
output: {dir: out, formats: [mp4]}
defaults: {num_frames: 2, num_inference_steps: 1, width: 64, height: 64}
items:
"""


def campaign(folder, ids: str = "abcde"):
    for job_id in ids:
        write_image(folder / f"{job_id}.png", seed=ord(job_id))
    body = "".join(f"  - id: {job_id}\n    image: {job_id}.png\n" for job_id in ids)
    return write_manifest(folder, MANIFEST + body)


def test_a_run_appends_sealed_parts_and_compacts_them_once_at_its_end(tmp_path, monkeypatch):
    """Parts of two lines each are written once, never rewritten; the end of the run writes index.jsonl
    (in manifest order) and runs.jsonl once, and removes the parts; each entry says its run once."""
    monkeypatch.setattr(index_module, "SEAL_ENTRIES", 2)
    writes: list[str] = []
    original = OutputStore.write_bytes

    def logged(self, name, data):
        writes.append(name)
        original(self, name, data)

    monkeypatch.setattr(OutputStore, "write_bytes", logged)
    manifest = campaign(tmp_path)
    assert set(run_manifest(manifest).statuses.values()) == {"done"}

    record = [name for name in writes if not name.endswith((".json", ".txt")) or name.endswith(".run.json")]
    [run_file] = [name for name in record if name.endswith(".run.json")]
    run_id = run_file.split("/")[-1].removesuffix(".run.json")
    assert record == [run_file, f".svdflow/record/{run_id}.000000.jsonl", f".svdflow/record/{run_id}.000001.jsonl",
                      ".svdflow/inputs.jsonl", "runs.jsonl", "index.jsonl", ".svdflow/summaries.jsonl"]
    assert sorted(name for name in writes if name.endswith(".json") and "/" not in name) == [
        f"{job_id}.json" for job_id in "abcde"]  # one sidecar per job, written once
    out = tmp_path / "out"
    assert list((out / ".svdflow" / "record").iterdir()) == []
    lines = index_lines(out)
    assert list(lines) == ["a", "b", "c", "d", "e"]
    assert all(line["run_id"] == run_id and "versions" not in line and "model" not in line for line in lines.values())
    [run] = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert run["id"] == run_id and run["versions"] == recorded(out)["a"]["versions"]

    writes.clear()  # nothing changed: a rerun writes nothing of the record
    assert set(run_manifest(manifest).statuses.values()) == {"up to date"}
    assert writes == []


def test_a_killed_runs_parts_and_sidecars_merge_and_the_next_run_compacts_them(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "SEAL_ENTRIES", 2)
    manifest = campaign(tmp_path, "abc")
    run_manifest(manifest)
    out = tmp_path / "out"
    # What a run killed after sealing a part and writing one more sidecar leaves: no compaction.
    index = RunIndex.load(OutputStore(str(out)))
    entries = {entry.id: entry for entry in index}
    later = RunIndex.load(OutputStore(str(out)))
    for job_id in "ab":
        later.record(entries[job_id].model_copy(update={"finished_unix": entries[job_id].finished_unix + 10}))
    later.seal()
    later.record(entries["c"].model_copy(update={"finished_unix": entries["c"].finished_unix + 10}))
    parts = sorted(p.name for p in (out / ".svdflow" / "record").iterdir())
    assert len(parts) == 2 and parts[0].endswith(".000000.jsonl") and parts[1].endswith(".run.json")

    loaded = RunIndex.load(OutputStore(str(out)))
    assert {job_id: loaded.summary(job_id).finished_unix for job_id in "abc"} == {
        job_id: entries[job_id].finished_unix + 10 for job_id in "abc"}
    assert loaded.skipped == []
    assert set(run_manifest(manifest).statuses.values()) == {"up to date"}
    assert list((out / ".svdflow" / "record").iterdir()) == []
    assert {line["finished_unix"] for line in index_lines(out).values()} == {
        entries[job_id].finished_unix + 10 for job_id in "abc"}
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2


def _loaded(out, **kwargs) -> dict:
    index = RunIndex.load(OutputStore(str(out)), **kwargs)
    return {job_id: (bytes(index.line(job_id)), index.summary(job_id)) for job_id in index.ids()}


def test_a_clean_record_loads_from_its_summaries_and_any_mismatch_parses_the_lines(tmp_path, monkeypatch):
    """A compaction writes index.jsonl's summaries beside it (.svdflow/summaries.jsonl, CRC-checked):
    loading then parses no line. Any mismatch (index.jsonl edited, a row that does not pass) parses the
    lines (that row's line) instead: the same record either way."""
    from svdflow.outputs import jsonlines, summaries

    run_manifest(campaign(tmp_path, "abc"))
    out = tmp_path / "out"
    rows = (out / ".svdflow" / "summaries.jsonl").read_text().splitlines()
    header = json.loads(rows[0])
    index_bytes = (out / "index.jsonl").read_bytes()
    assert header["svdflow_summaries"] == 1 and header["index_bytes"] == len(index_bytes)
    assert [json.loads(row)[:3] for row in rows[1:]] == [
        [job_id, line["run_id"], len(json.dumps(line, separators=(",", ":"), ensure_ascii=False)) + 1]
        for job_id, line in index_lines(out).items()]

    parsed: list[bytes] = []
    loads = jsonlines.loads
    monkeypatch.setattr(index_module, "loads", lambda line: (  # index.jsonl's lines (runs.jsonl's are parsed)
        parsed.append(bytes(line)) if b'"run_id"' in bytes(line) else None) or loads(line))
    from_summaries = _loaded(out)
    assert parsed == [] and list(from_summaries) == ["a", "b", "c"]
    (out / ".svdflow" / "summaries.jsonl").unlink()
    assert _loaded(out) == from_summaries and len(parsed) == 3  # the same, from the lines

    # A row that does not pass (a status no entry has), under a header that matches: its line is parsed.
    bad = json.loads(rows[2])
    bad[3] = "exploded"
    (out / ".svdflow" / "summaries.jsonl").write_text("\n".join([rows[0], rows[1], json.dumps(bad), rows[3]]) + "\n")
    parsed.clear()
    assert _loaded(out) == from_summaries and parsed == [index_bytes.splitlines(keepends=True)[1]]

    # index.jsonl edited by hand (b failed): the summaries are not its own any more; the edit counts.
    (out / ".svdflow" / "summaries.jsonl").write_text("\n".join(rows) + "\n")
    lines = index_bytes.decode().splitlines(keepends=True)
    lines[1] = lines[1].replace('"status":"done"', '"status":"failed"')
    (out / "index.jsonl").write_text("".join(lines))
    parsed.clear()
    edited = _loaded(out)
    assert len(parsed) == 3 and edited["b"][1].status == "failed" and edited["a"] == from_summaries["a"]
    assert summaries.read_summaries((out / ".svdflow" / "summaries.jsonl").read_bytes(),
                                    (out / "index.jsonl").read_bytes()) is None


def test_a_clean_record_reads_no_sidecars_time_and_an_unfinished_writer_reads_them(tmp_path, monkeypatch):
    """Where the last writer finished (no trace in .svdflow/record/), index.jsonl holds every sidecar:
    loading looks at no sidecar's size or time. `svdflow qc` killed before its compaction leaves its
    `.open` mark: the sidecars it rewrote are newer than their lines, and they are read."""
    from svdflow.outputs import store as store_module

    run_manifest(campaign(tmp_path, "abc"))
    out = tmp_path / "out"
    looked: list[str] = []
    stat = store_module.os.stat  # a listing looks at its names in the open folder (dir_fd)
    monkeypatch.setattr(store_module.os, "stat", lambda path, **kw: looked.append(str(path)) or stat(path, **kw))
    index = RunIndex.load(OutputStore(str(out)))
    assert [name for name in looked if name.endswith(".json")] == []

    entry = index.get("b")
    quality = entry.quality.model_copy(update={"passed": False}) if entry.quality else None
    amended = entry.model_copy(update={"seed": entry.seed + 1, "quality": quality})
    index.amend(amended)  # killed here: no part, no compaction
    [mark] = [p.name for p in (out / ".svdflow" / "record").iterdir()]
    assert mark == f"{index.run_id}.open"
    looked.clear()
    loaded = RunIndex.load(OutputStore(str(out)))
    assert loaded.get("b").seed == entry.seed + 1 and loaded.get("a") == index.get("a")
    assert sorted(name.rsplit("/", 1)[-1] for name in looked if name.endswith(".json")) == ["a.json", "b.json", "c.json"]
    loaded.finish()  # the next writer's compaction takes the mark away
    assert list((out / ".svdflow" / "record").iterdir()) == []
    assert RunIndex.load(OutputStore(str(out))).get("b").seed == entry.seed + 1


def read_record(out):
    """index.jsonl joined to runs.jsonl by pandas, DuckDB and Polars, as the README says to read it:
    each gives [(id, status, key, the run's name, its torch version)] in the file's order."""
    import duckdb
    import pandas
    import polars

    jobs = pandas.read_json(out / "index.jsonl", lines=True, dtype={"id": str, "item_id": str})
    runs = pandas.read_json(out / "runs.jsonl", lines=True)
    joined = jobs.merge(runs, left_on="run_id", right_on="id", suffixes=("", "_run"))
    by_pandas = [(row.id, row.status, None if pandas.isna(row.key) else row.key, row.name, row.versions["torch"])
                 for row in joined.itertuples()]
    by_duckdb = duckdb.sql(
        f"SELECT j.id, j.status, j.key, r.name, r.versions.torch FROM read_json_auto('{out}/index.jsonl', "
        f"sample_size=-1) j JOIN read_json_auto('{out}/runs.jsonl') r ON j.run_id = r.id ORDER BY j.id").fetchall()
    by_polars = (polars.read_ndjson(out / "index.jsonl", infer_schema_length=None)
                 .join(polars.read_ndjson(out / "runs.jsonl"), left_on="run_id", right_on="id", suffix="_run")
                 .select("id", "status", "key", "name", polars.col("versions").struct.field("torch")).rows())
    return by_pandas, by_duckdb, by_polars


@pytest.mark.slow  # a jq process, and pandas, duckdb and polars imported: several seconds
def test_the_record_reads_as_json_lines_in_jq_pandas_duckdb_and_polars(tmp_path):
    """Job ids that look like numbers stay strings, a failed job (null keys) listed first does not type
    the key column, and every line is read however many come before it."""
    write_image(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    manifest = write_manifest(tmp_path, MANIFEST + "  - {id: '001', image: bad.png}\n  - {id: '002', image: a.png}\n")
    run_manifest(manifest)
    out = tmp_path / "out"
    if shutil.which("jq"):
        ids = subprocess.run(["jq", "-r", "select(.status == \"done\") | .id", str(out / "index.jsonl")],
                             capture_output=True, text=True, check=True).stdout.split()
        assert ids == ["002"]
    entries = recorded(out)
    expected = [(job_id, entries[job_id]["status"], entries[job_id]["key"], "r", entries[job_id]["versions"]["torch"])
                for job_id in ("001", "002")]
    assert expected[0][1:3] == ("failed", None) and expected[1][1] == "done"
    assert read_record(out) == (expected, expected, expected)

    # DuckDB guesses a column's type from the first 20,480 lines and Polars from the first 100, and by
    # default silently drop what does not fit (a key after 20,480 failed jobs, a column first said on a
    # later line): the README's calls read the whole file. The lines are this run's, copied.
    failed, done = (json.loads(line) for line in (out / "index.jsonl").read_text().splitlines())
    reencoded = {**done, "versions": {**entries["002"]["versions"], "svdflow": "0.1.0"}}  # its render's
    count = 20_481
    with (out / "index.jsonl").open("w") as f:
        for i in range(count):
            f.write(json.dumps({**failed, "id": f"f{i:05d}", "item_id": f"f{i:05d}"}) + "\n")
        f.write(json.dumps(reencoded) + "\n")
    import duckdb
    import polars

    [(key, svdflow)] = duckdb.sql(f"SELECT key, versions.svdflow FROM read_json_auto('{out}/index.jsonl', "
                                  "sample_size=-1) WHERE id = '002'").fetchall()
    assert (key, svdflow) == (done["key"], "0.1.0")
    frame = polars.read_ndjson(out / "index.jsonl", infer_schema_length=None)
    assert frame.height == count + 1 and frame.row(-1, named=True)["key"] == done["key"]
    assert frame.row(-1, named=True)["versions"]["svdflow"] == "0.1.0"


def test_a_rerun_reads_no_unchanged_input_and_decodes_nothing_and_a_changed_input_is_hashed_again(tmp_path, monkeypatch):
    manifest = campaign(tmp_path, "ab")
    run_manifest(manifest)
    read: list[str] = []
    original = input_hashes.fetch_bytes

    def counted(uri, **kwargs):
        read.append(uri)
        return original(uri, **kwargs)

    monkeypatch.setattr(input_hashes, "fetch_bytes", counted)

    def never_fetched(job):
        raise AssertionError(f"{job.id}'s input was fetched and decoded")

    monkeypatch.setattr(executor_module, "fetch_input", never_fetched)
    assert {p.status for p in plan_run(load_run_spec(manifest))} == {"up to date"}
    assert set(run_manifest(manifest).statuses.values()) == {"up to date"}
    assert read == []

    write_image(tmp_path / "b.png", seed=99)  # another image under the same name
    assert [(p.job.id, p.status, p.reason) for p in plan_run(load_run_spec(manifest))] == [
        ("a", "up to date", ""), ("b", "changed", "input image changed")]
    assert read == [str(tmp_path / "b.png")]


def test_a_rerun_with_no_remembered_hashes_reads_each_finished_jobs_input_once_and_decodes_none(tmp_path,
                                                                                               monkeypatch):
    """A folder from before inputs.jsonl (or with it lost): the inputs of the jobs the record has done
    are hashed, once each, not decoded per job; the hashes are remembered again."""
    manifest = campaign(tmp_path, "ab")
    run_manifest(manifest)
    (tmp_path / "out" / ".svdflow" / "inputs.jsonl").unlink()
    read: list[str] = []
    original = input_hashes.fetch_bytes

    def counted(uri, **kwargs):
        read.append(uri)
        return original(uri, **kwargs)

    def never_fetched(job):
        raise AssertionError(f"{job.id}'s input was fetched and decoded")

    monkeypatch.setattr(input_hashes, "fetch_bytes", counted)
    monkeypatch.setattr(executor_module, "fetch_input", never_fetched)
    assert run_manifest(manifest).statuses == {"a": "up to date", "b": "up to date"}
    assert read == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert (tmp_path / "out" / ".svdflow" / "inputs.jsonl").read_text().count("\n") == 2


def test_a_local_run_holds_at_most_its_prefetch_window_of_inputs(tmp_path, monkeypatch):
    manifest = campaign(tmp_path, "abcdefg")
    most = []
    original = executor_module.Executor._take_input

    def watched(self, job):
        most.append(len(self._inputs))
        return original(self, job)

    monkeypatch.setattr(executor_module.Executor, "_take_input", watched)
    assert set(run_manifest(manifest).statuses.values()) == {"done"}
    assert len(most) == 7 and max(most) <= 4  # prefetch 3: the job's own and the next three


@pytest.fixture
def moto(tmp_path, monkeypatch):
    """A moto S3 server on loopback, which s3fs (and boto3) in this process reach through AWS_*."""
    import s3fs
    from s3_server import MotoServer

    server = MotoServer(tmp_path / "moto.log")
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # one made for another endpoint would be reused
    yield server
    s3fs.S3FileSystem.clear_instance_cache()
    server.close()


@pytest.mark.slow
def test_an_unchanged_s3_campaign_is_rerun_without_reading_an_image_and_a_changed_object_is_hashed_again(
        tmp_path, moto):
    """Inputs and output folder on S3: the rerun knows each input by its listed ETag (one listing of
    the inputs' folder, no GET of an image); new bytes under the same key make a new ETag, and that
    image alone is read and hashed again."""
    s3 = moto.client()
    s3.create_bucket(Bucket="camp")

    def upload(job_id: str, seed: int) -> bytes:
        """An uncompressed PNG: its size is its pixels', whatever they are."""
        data = io.BytesIO()
        Image.open(write_image(tmp_path / f"{job_id}.png", seed=seed)).save(data, format="PNG", compress_level=0)
        s3.put_object(Bucket="camp", Key=f"in/{job_id}.png", Body=data.getvalue())
        return data.getvalue()

    first_b = [upload(job_id, ord(job_id)) for job_id in "ab"][1]
    body = "".join(f"  - id: {job_id}\n    image: s3://camp/in/{job_id}.png\n" for job_id in "ab")
    manifest = write_manifest(tmp_path, MANIFEST.replace("dir: out", "dir: 's3://camp/out'") + body)

    def images_read(since: int) -> list[str]:
        return [path for method, path in moto.requests(since) if method == "GET" and path.startswith("/camp/in/")]

    mark = moto.mark()
    assert set(run_manifest(manifest).statuses.values()) == {"done"}
    assert sorted(images_read(mark)) == ["/camp/in/a.png", "/camp/in/b.png"]  # hashed once, while planning
    stamps = [json.loads(line) for line in s3.get_object(Bucket="camp", Key="out/.svdflow/inputs.jsonl")["Body"]
              .read().splitlines()]
    etags = {head["ETag"] for head in (s3.head_object(Bucket="camp", Key=f"in/{j}.png") for j in "ab")}
    assert {stamp["stamp"].removeprefix("ETag:") for stamp in stamps} == etags

    mark = moto.mark()
    assert {p.status for p in plan_run(load_run_spec(manifest))} == {"up to date"}
    assert set(run_manifest(manifest).statuses.values()) == {"up to date"}
    assert images_read(mark) == []
    requests = moto.requests(mark)
    listings = [path.split("&")[1] for method, path in requests if "list-type=2" in path]
    # the plan's and the run's: one listing of each folder, one GET of each file of the record, the
    # marks looked at; no request for a job's own files (the last sidecars were written a second
    # before index.jsonl, and no writer's trace is left, so index.jsonl holds them), nor its master's
    assert listings == 2 * ["prefix=out/", "prefix=out/.svdflow/record/", "prefix=out/.svdflow/", "prefix=in/"]
    record = ["GET /camp/out/runs.jsonl", "GET /camp/out/index.jsonl", "GET /camp/out/.svdflow/summaries.jsonl",
              "GET /camp/out/.svdflow/inputs.jsonl"]
    marks = ["HEAD /camp/out/.svdflow/README.txt", "HEAD /camp", "HEAD /camp/out/.svdflow/README.txt"]
    assert [f"{method} {path}" for method, path in requests if "list-type=2" not in path] == record + marks + record

    second_b = upload("b", 99)  # other bytes of the same size under the same key: only the ETag tells
    assert len(second_b) == len(first_b) and second_b != first_b
    mark = moto.mark()
    assert [(p.job.id, p.status, p.reason) for p in plan_run(load_run_spec(manifest))] == [
        ("a", "up to date", ""), ("b", "changed", "input image changed")]
    assert images_read(mark) == ["/camp/in/b.png"]


@pytest.mark.slow
def test_an_s3_rerun_takes_masters_as_recorded_and_the_re_encode_that_needs_a_deleted_one_renders_its_job(
        tmp_path, moto, capsys):
    """On S3 a rerun does not list `.svdflow/masters/` (a request per 1,000 names): a deleted master
    leaves its job up to date, and the plan says that masters are taken as recorded. A re-encode looks
    at the master it needs first: the deleted one makes its job render (and write a new master)."""
    s3 = moto.client()
    s3.create_bucket(Bucket="camp")
    for job_id in "ab":
        write_image(tmp_path / f"{job_id}.png", seed=ord(job_id))
    body = "".join(f"  - id: {job_id}\n    image: {job_id}.png\n" for job_id in "ab")
    s3_manifest = MANIFEST.replace("dir: out", "dir: 's3://camp/out'") + body
    manifest = write_manifest(tmp_path, s3_manifest)
    assert set(run_manifest(manifest).statuses.values()) == {"done"}
    s3.delete_object(Bucket="camp", Key="out/.svdflow/masters/a.mkv")

    mark = moto.mark()
    code, out, _ = run_cli(capsys, "plan", str(manifest))
    assert code == 0 and [line.split()[-1] for line in out.splitlines()[2:4]] == ["date", "date"]
    assert out.splitlines()[-1] == (
        "masters: taken as recorded, not listed (on s3://camp/out, a listing is a request per 1,000 names); one "
        "missing or damaged is found when a re-encode or `svdflow qc` reads it, and a re-encode then renders its "
        "job again")
    loading = ["GET /camp?list-type=2&prefix=out/&delimiter=/&encoding-type=url",
               "GET /camp?list-type=2&prefix=out/.svdflow/record/&delimiter=/&encoding-type=url",
               "GET /camp?list-type=2&prefix=out/.svdflow/&delimiter=/&encoding-type=url",
               "GET /camp/out/runs.jsonl", "GET /camp/out/index.jsonl", "GET /camp/out/.svdflow/summaries.jsonl",
               "GET /camp/out/.svdflow/inputs.jsonl"]
    assert [f"{method} {path}" for method, path in moto.requests(mark)] == loading  # no master looked at

    reencode = write_manifest(tmp_path, s3_manifest.replace("formats: [mp4]", "formats: [mp4], crf: 23"), "crf.yaml")
    mark = moto.mark()
    assert [(p.job.id, p.status, p.reason) for p in plan_run(load_run_spec(reencode))] == [
        ("a", "changed", "crf 18 -> 23; master .svdflow/masters/a.mkv is missing: rendering again"),
        ("b", "re-encode", "crf 18 -> 23")]
    # the record as before, then the masters the re-encodes need: the size of each (a missing one is
    # looked for as a folder too, by s3fs), and the sound one read whole for its sha256
    assert [f"{method} {path}" for method, path in moto.requests(mark)] == loading + [
        "HEAD /camp/out/.svdflow/masters/a.mkv",
        "GET /camp?list-type=2&prefix=out/.svdflow/masters/a.mkv/&delimiter=/&max-keys=1&encoding-type=url",
        "HEAD /camp/out/.svdflow/masters/b.mkv", "HEAD /camp/out/.svdflow/masters/b.mkv",
        "GET /camp/out/.svdflow/masters/b.mkv"]
    assert run_manifest(reencode).statuses == {"a": "done", "b": "re-encoded"}
    assert s3.head_object(Bucket="camp", Key="out/.svdflow/masters/a.mkv")["ContentLength"] > 0


def test_a_command_freezes_what_its_pauses_built_until_it_ends():
    """Inside `campaign_held` (validate, run, qc, report) what a pause built is out of the collector's sight
    (no collection walks a 100,000-job campaign again); the last scope to end gives it back, and a
    pause outside any command freezes nothing."""
    import gc
    import weakref

    from svdflow.collector import campaign_held, gc_paused

    class Cyclic:
        pass

    assert gc.get_freeze_count() == 0
    with campaign_held():
        with gc_paused():
            built = [{"job": i} for i in range(1000)]
            garbage = Cyclic()
            garbage.me = garbage
            collected = weakref.ref(garbage)
            del garbage
        assert gc.get_freeze_count() >= len(built) and gc.isenabled()
        assert collected() is None  # cyclic garbage of the pause is collected, not frozen
        with campaign_held():  # a run inside a command: the outer one still holds its campaign
            pass
        assert gc.get_freeze_count() >= len(built)
    assert gc.get_freeze_count() == 0
    with gc_paused():
        built = [{"job": i} for i in range(1000)]
    assert gc.get_freeze_count() == 0 and gc.isenabled()
