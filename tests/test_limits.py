"""What one manifest may ask for: the jobs it expands to (max_jobs, counted before they are made) and
the size of the manifest and table files. (The 16.7-million-job sweep is tests/invalid/sweep_too_many_jobs;
`benchmarks/bench_manifest.py --scenario bomb` times it.)"""

from __future__ import annotations

import pytest
from conftest import run_cli, write_manifest

from svdflow.errors import ManifestError
from svdflow.manifest import load_run_spec
from svdflow.manifest import loader as loader_module
from svdflow.manifest.limits import DEFAULT_MAX_JOBS
from svdflow.manifest.sources import table as table_module

HEAD = "svdflow: 1\nmodel: {source: builtin:tiny}\ndefaults: {num_frames: 4}\n"


def problems(path) -> list[str]:
    with pytest.raises(ManifestError) as raised:
        load_run_spec(path)
    return [str(p) for p in raised.value.problems]


def test_the_default_limit_is_100000_jobs(tmp_path):
    assert DEFAULT_MAX_JOBS == 100_000
    values = ", ".join(str(i) for i in range(256))
    path = write_manifest(tmp_path, HEAD + f"items:\n  - id: a\n    image: a.png\n    sweep:\n"
                                           f"      seed: [{values}]\n      motion_bucket_id: [{values}]\n"
                                           "      fps: [6, 7]\n")
    assert problems(path) == [
        f"{path}:8:7: items[0].sweep: this sweep makes 131,072 jobs (2 values of fps x 256 of motion_bucket_id x "
        "256 of seed), past the limit of 100,000 jobs per manifest; sweep fewer values, or raise the limit at the "
        "top level of the manifest (max_jobs: 131072)"]


def test_a_sweep_exactly_at_the_limit_is_valid_and_one_more_job_is_not(tmp_path):
    sweep = "    sweep:\n      seed: [1, 2, 3]\n      motion_bucket_id: [1, 2, 3]\n"
    at = write_manifest(tmp_path, HEAD + "max_jobs: 10\nitems:\n  - id: a\n    image: a.png\n" + sweep
                        + "  - id: b\n    image: a.png\n", "at.yaml")
    assert len(load_run_spec(at).jobs) == 10
    over = write_manifest(tmp_path, HEAD + "max_jobs: 9\nitems:\n  - id: b\n    image: a.png\n"
                          "  - id: a\n    image: a.png\n" + sweep, "over.yaml")
    assert problems(over) == [
        f"{over}:11:7: items[1].sweep: this sweep makes 9 jobs (3 values of motion_bucket_id x 3 of seed), past the "
        "limit of 9 jobs per manifest (1 of them taken by the items before it); sweep fewer values, or raise the "
        "limit at the top level of the manifest (max_jobs: 10)"]


def test_the_suggested_limit_counts_the_written_items_after_the_one_that_went_over(tmp_path):
    path = write_manifest(tmp_path, HEAD + "max_jobs: 2\nitems:\n" + "".join(
        f"  - id: i{n}\n    image: a.png\n" for n in range(3))
        + "  - id: s\n    image: a.png\n    sweep: {seed: [1, 2, 3, 4]}\n")
    assert problems(path) == [
        f"{path}:10:5: items[2]: this item is job 3, past the limit of 2 jobs per manifest (2 of them taken by the "
        "items before it); split the items across manifests, or raise the limit at the top level of the manifest "
        "(max_jobs: 7)"]


def test_max_jobs_must_be_a_positive_integer(tmp_path):
    path = write_manifest(tmp_path, HEAD + "max_jobs: 0\nitems:\n  - id: a\n    image: a.png\n")
    assert problems(path) == [f"{path}:4:11: max_jobs: 0 is out of range; use a value at least 1"]


def test_the_limit_is_checked_when_another_part_of_the_file_fails_the_schema(tmp_path):
    values = ", ".join(str(i) for i in range(256))
    path = write_manifest(tmp_path, HEAD + "output: {crf: 60}\nitems:\n  - id: a\n    image: a.png\n    sweep:\n"
                                           f"      seed: [{values}]\n      motion_bucket_id: [{values}]\n"
                                           "      fps: [6, 7]\n")
    assert problems(path) == [
        f"{path}:4:15: output.crf: 60 is out of range; use a value at most 51",
        f"{path}:9:7: items[0].sweep: this sweep makes 131,072 jobs (2 values of fps x 256 of motion_bucket_id x 256 "
        "of seed), past the limit of 100,000 jobs per manifest; sweep fewer values, or raise the limit at the top "
        "level of the manifest (max_jobs: <the number of jobs you mean to render>)",
    ]


def test_a_table_is_read_only_up_to_the_row_that_goes_over(tmp_path, monkeypatch):
    (tmp_path / "rows.csv").write_text("id,image\n" + "".join(f"r{i},a.png\n" for i in range(50))
                                       + "bad row,\n")  # never read: a problem past the limit is not reported
    path = write_manifest(tmp_path, HEAD + "max_jobs: 10\nitems:\n  - table: rows.csv\n")
    assert problems(path) == [
        f"{path}:6:12: items[0].table: this table has more than 10 rows, past the limit of 10 jobs per manifest; "
        "split the table across manifests, or raise the limit at the top level of the manifest (max_jobs: <the "
        "number of jobs you mean to render>)"]


def test_a_glob_stops_counting_where_it_goes_over(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{name}.png").write_bytes(b"")
    path = write_manifest(tmp_path, HEAD + "max_jobs: 5\nitems:\n  - glob: in/*.png\n    sweep: {seed: [1, 2]}\n")
    assert problems(path) == [
        f"{path}:6:11: items[0].glob: this glob matches more than 2 files, each swept into 2 jobs, past the limit "
        "of 5 jobs per manifest; narrow the pattern, or raise the limit at the top level of the manifest (max_jobs: "
        "<the number of jobs you mean to render>)"]
    raised = write_manifest(tmp_path, HEAD + "max_jobs: 6\nitems:\n  - glob: in/*.png\n    sweep: {seed: [1, 2]}\n",
                            "raised.yaml")
    assert len(load_run_spec(raised).jobs) == 6


def test_a_manifest_past_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loader_module, "MAX_MANIFEST_BYTES", 1000)
    path = write_manifest(tmp_path, HEAD + "items:\n" + "".join(f"  - {{id: i{n}, image: a.png}}\n"
                                                                  for n in range(100)))
    size = path.stat().st_size
    code, _, err = run_cli(capsys, "validate", str(path))
    assert code == 2
    assert err.splitlines()[0] == (
        f"error: {path}: is {size:,} bytes, over the 1,000-byte limit for a manifest; list many items in a table "
        "(table: items.csv) or match them with a glob instead of writing each one out")


def test_a_manifest_that_never_ends_is_read_only_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(loader_module, "MAX_MANIFEST_BYTES", 1000)
    assert problems("/dev/zero") == [
        "/dev/zero: is over the 1,000-byte limit for a manifest; list many items in a table (table: items.csv) or "
        "match them with a glob instead of writing each one out"]


def test_a_table_past_the_size_limit_names_its_size_and_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(table_module, "MAX_TABLE_BYTES", 100)
    (tmp_path / "rows.csv").write_text("id,image\n" + "".join(f"r{i},a.png\n" for i in range(20)))
    size = (tmp_path / "rows.csv").stat().st_size
    path = write_manifest(tmp_path, HEAD + "items:\n  - table: rows.csv\n")
    assert problems(path) == [
        f"{path}:5:12: items[0].table: 'rows.csv' is {size:,} bytes, over the 100-byte limit for a table; split it "
        "into several tables (one table: entry each)"]
