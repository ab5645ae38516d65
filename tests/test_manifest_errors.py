"""Bad manifests: the exact text `svdflow validate` prints for each, and its exit code.

Each `tests/invalid/<name>.yaml` has one problem (several_problems.yaml and
schema_problem_and_duplicate_id.yaml have several) and its full expected stderr in
`<name>.expected`. Paths in messages are relative to the repo root, so every test runs from there. After a deliberate wording change, rewrite the expectations with
`SVDFLOW_UPDATE_EXPECTED=1 pytest tests/test_manifest_errors.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, SVDFLOW, run_cli, write_image

from svdflow.errors import EXIT_INVALID, ManifestError
from svdflow.manifest import load_manifest

INVALID = REPO / "tests" / "invalid"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))
UPDATE = os.environ.get("SVDFLOW_UPDATE_EXPECTED") == "1"



@pytest.fixture
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_corpus_is_complete():
    expected = sorted(p.stem for p in INVALID.glob("*.expected"))
    assert expected == CASES, "every tests/invalid/*.yaml needs a .expected file, and no stray ones"
    assert len(CASES) >= 28


@pytest.mark.parametrize("name", CASES)
def test_invalid_manifest_message(name, capsys, at_repo):
    rel = f"tests/invalid/{name}.yaml"
    code, out, err = run_cli(capsys, "validate", rel)
    expected_file = INVALID / f"{name}.expected"
    if UPDATE:
        expected_file.write_text(err)
    assert err == expected_file.read_text()
    assert code == EXIT_INVALID
    assert out == ""
    assert err.endswith(f"{rel}: invalid, {err.count('error: ')} problem{'s' * (err.count('error: ') != 1)}\n")
    assert "Traceback" not in err


def test_located_problems_name_line_and_column():
    """Everything except whole-file problems points at a line and column: of the manifest, or of the
    table beside it that the case reads (named like the case)."""
    whole_file = {"empty", "comment_only"}
    for name in CASES:
        for line in (INVALID / f"{name}.expected").read_text().splitlines()[:-1]:
            assert line.startswith((f"error: tests/invalid/{name}.yaml:", f"error: tests/invalid/{name}.csv:",
                                    f"error: tests/invalid/{name}.jsonl:")), line
            if name not in whole_file:
                where = line.split(": ", 2)[1]
                assert where.count(":") == 2 and all(p.isdigit() for p in where.split(":")[1:]), line


def test_several_problems_are_all_reported_in_file_order(at_repo):
    with pytest.raises(ManifestError) as raised:
        load_manifest("tests/invalid/several_problems.yaml")
    problems = raised.value.problems
    assert len(problems) == 7
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    assert raised.value.exit_code == EXIT_INVALID


@pytest.mark.parametrize("name", ["unknown_nested_key", "yaml_unclosed_bracket", "empty", "top_level_list",
                                  "sweep_id_collision"])
def test_real_process_prints_no_traceback(name):
    rel = f"tests/invalid/{name}.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*SVDFLOW, "validate", rel], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == EXIT_INVALID
    assert proc.stderr == (INVALID / f"{name}.expected").read_text()
    assert proc.stdout == ""


# Files that are not manifests at all: messages name the path as given, exit 2.

def test_missing_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "validate", "nope.yaml")
    assert err == "error: nope.yaml: no such file; check the path\nnope.yaml: invalid, 1 problem\n"
    assert code == EXIT_INVALID


def test_directory(capsys, tmp_path, monkeypatch):
    (tmp_path / "manifests").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "validate", "manifests")
    assert err == ("error: manifests: is a directory; pass a manifest file, e.g. manifests/campaign.yaml\n"
                   "manifests: invalid, 1 problem\n")
    assert code == EXIT_INVALID


def test_binary_file(capsys, tmp_path, monkeypatch):
    (tmp_path / "photo.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "validate", "photo.yaml")
    assert err == ("error: photo.yaml: is a binary file, not YAML text; pass the manifest's .yaml file\n"
                   "photo.yaml: invalid, 1 problem\n")
    assert code == EXIT_INVALID


def test_not_utf8(capsys, tmp_path, monkeypatch):
    (tmp_path / "latin1.yaml").write_bytes("svdflow: 1\nname: café\n".encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "validate", "latin1.yaml")
    assert err == ("error: latin1.yaml:2:10: byte 0xe9 is not UTF-8; save the file as UTF-8 text\n"
                   "latin1.yaml: invalid, 1 problem\n")
    assert code == EXIT_INVALID


def test_utf8_bom_is_accepted(capsys, tmp_path, monkeypatch):
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfsvdflow: 1\nitems:\n  - id: a\n    image: https://x.org/a.png\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "validate", "bom.yaml")
    assert (code, err) == (0, "bom.yaml: valid, 1 job\n")


# Several files at once.

def test_several_files_are_all_reported(capsys, at_repo):
    code, _, err = run_cli(capsys, "validate", "manifests/smoke.yaml", "tests/invalid/crf_60.yaml",
                           "manifests/sweep.yaml", "tests/invalid/bad_device.yaml")
    assert err == (
        "manifests/smoke.yaml: valid, 3 jobs\n"
        + (INVALID / "crf_60.expected").read_text()
        + "manifests/sweep.yaml: valid, 6 jobs\n"
        + (INVALID / "bad_device.expected").read_text()
    )
    assert code == EXIT_INVALID


def test_several_valid_files_exit_0(capsys, at_repo):
    code, _, err = run_cli(capsys, "validate", "manifests/smoke.yaml", "manifests/sweep.yaml")
    assert code == 0
    assert err == "manifests/smoke.yaml: valid, 3 jobs\nmanifests/sweep.yaml: valid, 6 jobs\n"


def test_validate_json(capsys, at_repo):
    code, out, err = run_cli(capsys, "validate", "--json", "manifests/sweep.yaml", "tests/invalid/crf_60.yaml")
    assert code == EXIT_INVALID
    assert err == ""
    valid, invalid = (json.loads(line) for line in out.splitlines())
    assert valid == {"file": "manifests/sweep.yaml", "valid": True, "jobs": 6, "errors": [], "more_errors": 0,
                     "warnings": []}
    assert invalid == {
        "file": "tests/invalid/crf_60.yaml", "valid": False, "jobs": None, "warnings": [], "more_errors": 0,
        "errors": [{"file": "tests/invalid/crf_60.yaml", "line": 3, "col": 8,
                    "message": "output.crf: 60 is out of range; use a value at most 51"}],
    }


def test_validate_json_carries_warnings(capsys, tmp_path, monkeypatch):
    (tmp_path / "m.yaml").write_text("svdflow: 1\nitems:\n  - id: a\n    image: missing.png\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "validate", "--json", "m.yaml")
    report = json.loads(out)
    assert code == 0 and report["valid"] and report["jobs"] == 1
    assert [(w["line"], w["col"]) for w in report["warnings"]] == [(4, 12)]
    assert report["warnings"][0]["message"] == (
        f"item 'a': image {Path(tmp_path, 'missing.png').resolve()} does not exist; its jobs will fail until it does")


def test_validate_needs_a_file(capsys):
    code, _, err = run_cli(capsys, "validate")
    assert code == EXIT_INVALID
    assert "Missing argument 'FILES...'" in err


def test_a_glob_whose_qc_no_clip_can_pass_is_said_once_not_once_per_match(tmp_path, capsys):
    for i in range(3):
        write_image(tmp_path / "imgs" / f"a{i}.png")
    (tmp_path / "g.yaml").write_text("svdflow: 1\nmodel: {source: builtin:tiny}\ndefaults:\n  qc: {min_motion: 5}\n"
                                     "items:\n  - glob: imgs/*.png\n    qc: {max_motion: 1}\n")
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "g.yaml"))
    assert code == EXIT_INVALID
    assert err.splitlines() == [
        f"error: {tmp_path}/g.yaml:7:9: glob match 'imgs/a0.png'.qc merged over defaults.qc: min_motion 5.0 is above "
        "max_motion 1.0: no clip can pass; lower min_motion or raise max_motion",
        f"{tmp_path}/g.yaml: invalid, 1 problem"]
