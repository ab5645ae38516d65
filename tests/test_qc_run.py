"""qc wired into runs (issue 26): the manifest's qc blocks, every done job scored on the writer side,
re-rolls of jobs that fail their thresholds, re-judging recorded scores, the exit code."""

from __future__ import annotations

from pathlib import Path

from conftest import write_manifest

from svdflow.manifest import load_run_spec
from svdflow.quality.thresholds import QcThresholds
from svdflow.run.keys import key_material


def spec_of(folder: Path, body: str):
    return load_run_spec(write_manifest(folder, body))


def test_an_items_qc_merges_over_defaults_field_by_field(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        model: {source: builtin:tiny}
        defaults:
          qc: {min_motion: 1.5, max_flicker: 20, rerolls: 2}
        items:
          - id: plain
            image: images/a.png
          - id: own
            image: images/b.png
            qc: {max_flicker: null, min_input_similarity: 0.4}
          - glob: images/c.png
            qc: {rerolls: 0}
          - id: silent
            image: images/a.png
            qc: {}
    """)
    plain, own, globbed, silent = spec.jobs
    assert plain.qc == QcThresholds(min_motion=1.5, max_flicker=20.0, rerolls=2)
    assert own.qc == QcThresholds(min_motion=1.5, min_input_similarity=0.4, rerolls=2)
    assert globbed.qc == QcThresholds(min_motion=1.5, max_flicker=20.0, rerolls=0)
    assert silent.qc == plain.qc


def test_no_qc_block_means_no_thresholds(tmp_path, images):
    spec = spec_of(tmp_path, "svdflow: 1\nitems:\n  - id: a\n    image: images/a.png\n")
    assert spec.jobs[0].qc is None


def test_qc_enters_no_key(tmp_path, images):
    body = """
        svdflow: 1
        model: {source: builtin:tiny}
        defaults: {qc: {min_motion: %s, rerolls: %d}}
        items:
          - id: a
            image: images/a.png
    """
    loose, strict = spec_of(tmp_path, body % (0.5, 0)), spec_of(tmp_path, body % (9.0, 3))
    assert loose.jobs[0].qc != strict.jobs[0].qc
    assert key_material(loose.jobs[0], "0" * 64, loose) == key_material(strict.jobs[0], "0" * 64, strict)
