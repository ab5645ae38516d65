"""`svdflow plan` and `--version`, run in-process on a copy of the example manifests.

The copy keeps renders from `make demo` (manifests/renders/) out of the statuses asserted here.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, done_entry, run_cli

from svdflow import __version__
from svdflow.errors import EXIT_INVALID
from svdflow.manifest import derive_seed, load_run_spec
from svdflow.outputs.index import RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.run.planning import plan_run


@pytest.fixture
def examples(tmp_path, monkeypatch):
    """A fresh copy of manifests/ (yaml files and images, no renders), as the cwd's manifests/."""
    target = tmp_path / "manifests"
    target.mkdir()
    for path in [*(REPO / "manifests").glob("*.yaml"), *(REPO / "manifests").glob("*.csv")]:
        shutil.copy(path, target / path.name)
    shutil.copytree(REPO / "manifests" / "images", target / "images")
    monkeypatch.chdir(tmp_path)
    return target


def test_plan_json_lists_new_jobs_with_their_seeds(capsys, examples):
    code, out, err = run_cli(capsys, "plan", "manifests/smoke.yaml", "--json")
    assert (code, err) == (0, "")
    planned = json.loads(out)
    assert [(p["id"], p["seed"], p["seed_origin"], p["status"]) for p in planned] == [
        ("sunset", derive_seed(42, "sunset"), "derived", "new"),
        ("rocket", derive_seed(42, "rocket"), "derived", "new"),
        ("city", 7, "item", "new"),
    ]
    assert all(p["would_render"] and p["reason"] == "not rendered yet" for p in planned)
    assert planned[0]["image"] == str((examples / "images" / "sunset.png").resolve())
    assert planned[1]["params"]["motion_bucket_id"] == 180
    assert planned[2]["params"]["resize"] == "pad"
    assert all(len(p["key"]) == 64 and len(p["input_sha256"]) == 64 for p in planned)


def test_plan_check_exits_1_when_something_would_render(capsys, examples):
    code, _, _ = run_cli(capsys, "plan", "manifests/smoke.yaml", "--check", "--json")
    assert code == 1


def test_plan_check_exits_0_when_everything_selected_is_up_to_date(capsys, examples):
    spec = load_run_spec(examples / "smoke.yaml")
    (sunset,) = plan_run(spec, only=("sunset",))
    store = OutputStore(spec.output_dir)
    store.makedirs()
    RunIndex.load(store).record(done_entry(sunset, spec))

    code, out, _ = run_cli(capsys, "plan", "manifests/smoke.yaml", "--json")
    assert code == 0
    assert [p["status"] for p in json.loads(out)] == ["up to date", "new", "new"]
    assert run_cli(capsys, "plan", "manifests/smoke.yaml", "--check", "--only", "sunset")[0] == 0
    assert run_cli(capsys, "plan", "manifests/smoke.yaml", "--check")[0] == 1


def test_plan_only_selects_jobs(capsys, examples):
    code, out, _ = run_cli(capsys, "plan", "manifests/smoke.yaml", "--json", "--only", "sunset")
    assert code == 0
    assert [p["id"] for p in json.loads(out)] == ["sunset"]
    code, out, _ = run_cli(capsys, "plan", "manifests/sweep.yaml", "--json",
                           "--only", "city-m200-aug0.1", "--only", "city-m60-aug0.02")
    assert [p["id"] for p in json.loads(out)] == ["city-m60-aug0.02", "city-m200-aug0.1"]  # manifest order


def test_plan_only_unknown_id_is_a_usage_error(capsys, examples):
    code, out, err = run_cli(capsys, "plan", "manifests/smoke.yaml", "--only", "nope")
    assert code == EXIT_INVALID
    assert out == ""
    assert err == ("error: --only nope: no such job in manifests/smoke.yaml; run `svdflow plan "
                   "manifests/smoke.yaml` to list the job ids\n")


def test_plan_table(capsys, examples):
    code, out, _ = run_cli(capsys, "plan", "manifests/sweep.yaml")
    assert code == 0
    # Not a terminal: aligned plain text, every cell whole (rich would cut them to fit 80 columns).
    lines = out.splitlines()
    assert lines[0].startswith("motion-sweep: 6 jobs -> ")
    assert lines[1].split() == ["id", "image", "seed", "size", "frames", "clip", "duration", "steps", "fps", "motion",
                                "aug", "from", "status"]
    # clip and duration: the written files' frames and seconds (8 frames at 7 fps)
    assert lines[2].split()[0] == "city-m60-aug0.02" and lines[2].split()[3:] == [
        "112x64", "8", "8", "1.14s", "4", "7", "60", "0.02", "manifests/sweep.yaml:19", "new"]
    # Under the table, where the values came from: what varies per job is in `plan --json`.
    assert lines[-6:] == [
        "where values came from (the rest: svdflow's defaults):",
        "  sweeps:     motion_bucket_id (all), noise_aug_strength (all)",
        "  defaults:   num_frames (all), num_inference_steps (all), width (all), height (all)",
        "  derived:    seed (all): from (base seed, item id)",
        "6 to render, 0 to re-encode, 0 up to date",
        # what the run will write: builtin:tiny renders noise, so the noise figures (outputs/storage.py)
        'storage (estimated from noise frames (builtin:tiny renders noise)): this run writes ~1.3 MiB: videos ~257.7 KiB (mp4 ~257.7 KiB), masters ~1.1 MiB in .svdflow/masters/; the finished campaign holds ~1.3 MiB',
    ]


def test_plan_of_an_invalid_manifest(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = run_cli(capsys, "plan", "tests/invalid/crf_60.yaml")
    assert (code, out) == (EXIT_INVALID, "")
    assert err == "error: tests/invalid/crf_60.yaml:3:8: output.crf: 60 is out of range; use a value at most 51\n"


def test_plan_prints_warnings_on_stderr(capsys, examples):
    (examples / "warn.yaml").write_text(
        "svdflow: 1\nmodel: {source: builtin:tiny}\nitems:\n  - id: a\n    image: images/gone.png\n")
    code, out, err = run_cli(capsys, "plan", "manifests/warn.yaml", "--json")
    assert code == 0
    gone = (examples / "images" / "gone.png").resolve()
    assert err == (f"warning: manifests/warn.yaml:5:12: item 'a': image {gone} does not exist; its jobs will "
                   "fail until it does\n")
    (planned,) = json.loads(out)
    assert planned["status"] == "input error"


def test_plan_prints_twenty_warnings_then_how_many_more(capsys, examples):
    # A table whose 23 images are all missing: every row warns; the run's own lines must not drown.
    rows = "".join(f"r{i:02d},images/gone{i:02d}.png\n" for i in range(23))
    (examples / "shots.csv").write_text("id,image\n" + rows)
    (examples / "many.yaml").write_text(
        "svdflow: 1\nmodel: {source: builtin:tiny}\nitems:\n  - table: shots.csv\n")
    code, out, err = run_cli(capsys, "plan", "manifests/many.yaml", "--json")
    assert code == 0 and len(json.loads(out)) == 23
    lines = err.splitlines()
    assert len(lines) == 21
    gone = (examples / "images" / "gone19.png").resolve()
    assert lines[19] == (f"warning: manifests/shots.csv:21:5: item 'r19': image {gone} does not exist; its jobs "
                         "will fail until it does")
    assert lines[20] == ("warning: ... and 3 more warnings; svdflow validate --json manifests/many.yaml lists "
                         "them all")
    code, out, _ = run_cli(capsys, "validate", "manifests/many.yaml", "--json")
    assert code == 0 and len(json.loads(out)["warnings"]) == 23


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert (code, out) == (0, f"svdflow {__version__}\n")
    # One place defines it: pyproject.toml reads svdflow.__version__, and the changelog has its section.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "svdflow.__version__"}
    assert __version__ == "0.2.0" and f"\n## {__version__}\n" in (REPO / "CHANGELOG.md").read_text()
