"""Resolution of valid manifests into jobs: defaults, overrides, sweeps, seeds, paths, warnings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_manifest

from svdflow.manifest import derive_seed, load_manifest, load_run_spec
from svdflow.manifest.loader import read_document
from svdflow.manifest.resolve import PARAMETER_NAMES

EXAMPLES = sorted((REPO / "manifests").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schemas/manifest.schema.json"


def spec_of(folder: Path, body: str, name: str = "m.yaml"):
    return load_run_spec(write_manifest(folder, body, name))


def messages(problems) -> list[str]:
    return [p.message for p in problems]


# Defaults and overrides.

def test_defaults_fill_what_items_leave_out(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        model: {source: builtin:tiny}
        defaults:
          num_frames: 8
          num_inference_steps: 4
          width: 112
          height: 64
          resize: pad
        items:
          - id: plain
            image: images/a.png
          - id: custom
            image: images/b.png
            num_frames: 14
            resize: stretch
            noise_aug_strength: 0.1
    """)
    plain, custom = spec.jobs
    assert plain.params.model_dump() == {
        "num_frames": 8, "num_inference_steps": 4, "fps": 7, "playback_fps": 7.0, "motion_bucket_id": 127,
        "noise_aug_strength": 0.02, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, "width": 112,
        "height": 64, "resize": "pad", "seed": derive_seed(42, "plain"),
    }
    assert tuple(type(plain.params).model_fields) == PARAMETER_NAMES
    # Parameters added after release 0.1 are resolved too; at their defaults they are left out of dumps.
    assert (plain.params.cfg_until, plain.params.cache_interval) == (1.0, 1)
    assert (plain.params.segments, plain.params.loop, plain.params.loop_frames, plain.params.interpolate) == (
        1, "none", None, 1)
    assert (custom.params.num_frames, custom.params.resize, custom.params.noise_aug_strength) == (
        14, "stretch", 0.1)
    assert custom.params.num_inference_steps == 4  # still from defaults
    assert (plain.seed_origin, custom.seed_origin) == ("derived", "derived")


def test_built_in_defaults_without_a_defaults_section(tmp_path, images):
    spec = spec_of(tmp_path, "svdflow: 1\nitems:\n  - id: a\n    image: images/a.png\n")
    assert spec.model.source == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert spec.formats == ("mp4",) and spec.crf == 18
    params = spec.jobs[0].params
    assert (params.num_frames, params.width, params.height, params.fps) == (25, 1024, 576, 7)


def test_playback_fps_defaults_to_fps_as_a_float(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        defaults: {fps: 6}
        items:
          - {id: a, image: images/a.png}
          - {id: b, image: images/a.png, fps: 10}
          - {id: c, image: images/a.png, playback_fps: 24}
    """)
    fps = [(job.params.fps, job.params.playback_fps) for job in spec.jobs]
    assert fps == [(6, 6.0), (10, 10.0), (6, 24.0)]
    assert all(isinstance(job.params.playback_fps, float) for job in spec.jobs)


# Sweeps.

def test_sweep_example_expands_in_order_with_exact_ids():
    spec = load_run_spec(REPO / "manifests" / "sweep.yaml")
    assert [job.id for job in spec.jobs] == [
        "city-m60-aug0.02", "city-m60-aug0.1", "city-m127-aug0.02", "city-m127-aug0.1",
        "city-m200-aug0.02", "city-m200-aug0.1",
    ]
    assert [(j.params.motion_bucket_id, j.params.noise_aug_strength) for j in spec.jobs] == [
        (60, 0.02), (60, 0.1), (127, 0.02), (127, 0.1), (200, 0.02), (200, 0.1)]
    assert {job.item_id for job in spec.jobs} == {"city"}
    assert spec.jobs[3].sweep == {"motion_bucket_id": 127, "noise_aug_strength": 0.1}


def test_sweep_ids_follow_parameter_order_not_key_order(tmp_path, images):
    """Ids must not change when someone reorders the keys of a sweep."""
    spec = spec_of(tmp_path, """
        svdflow: 1
        items:
          - id: city
            image: images/a.png
            sweep:
              resize: [crop, pad]
              seed: [1, 2]
              noise_aug_strength: [0.5]
              width: [512]
    """)
    assert [job.id for job in spec.jobs] == [
        "city-aug0.5-w512-rcrop-s1", "city-aug0.5-w512-rcrop-s2",
        "city-aug0.5-w512-rpad-s1", "city-aug0.5-w512-rpad-s2",
    ]
    assert [job.seed for job in spec.jobs] == [1, 2, 1, 2]
    assert {job.seed_origin for job in spec.jobs} == {"sweep"}


def test_sweep_variations_share_the_items_derived_seed():
    """The design: a motion sweep compares motion, not noise."""
    spec = load_run_spec(REPO / "manifests" / "sweep.yaml")
    assert {job.seed for job in spec.jobs} == {derive_seed(42, "city")}
    assert {job.seed_origin for job in spec.jobs} == {"derived"}


def test_an_items_own_seed_wins_for_all_its_variations(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        defaults: {seed: 1234}
        items:
          - id: city
            image: images/a.png
            seed: 7
            sweep:
              motion_bucket_id: [60, 127]
          - id: rocket
            image: images/b.png
    """)
    assert [(job.id, job.seed, job.seed_origin) for job in spec.jobs] == [
        ("city-m60", 7, "item"), ("city-m127", 7, "item"), ("rocket", derive_seed(1234, "rocket"), "derived")]


# Seeds.

def test_derive_seed_values_are_pinned():
    """Changing the hash would silently change every derived seed, and so every video."""
    assert derive_seed(42, "sunset") == 5957177820453635125
    assert derive_seed(42, "city") == 4477713688197791722
    assert derive_seed(0, "city") == 4745910558595839658
    assert 0 <= derive_seed(2**63 - 1, "x" * 128) < 2**63


def test_seeds_do_not_depend_on_item_order(tmp_path, images):
    items = {
        "a": "  - id: a\n    image: images/a.png\n",
        "b": "  - id: b\n    image: images/b.png\n    sweep: {motion_bucket_id: [1, 2]}\n",
        "c": "  - id: c\n    image: images/c.png\n    seed: 5\n",
    }
    head = "svdflow: 1\ndefaults: {seed: 99}\nitems:\n"
    forward = load_run_spec(write_manifest(tmp_path, head + "".join(items.values()), "forward.yaml"))
    backward = load_run_spec(write_manifest(tmp_path, head + "".join(reversed(items.values())), "backward.yaml"))
    seeds = {job.id: job.seed for job in forward.jobs}
    assert seeds == {job.id: job.seed for job in backward.jobs}
    assert seeds == {"a": derive_seed(99, "a"), "b-m1": derive_seed(99, "b"), "b-m2": derive_seed(99, "b"), "c": 5}
    assert [job.id for job in backward.jobs] == ["c", "b-m1", "b-m2", "a"]


def test_campaign_seeds_match_the_smoke_manifest_for_the_same_ids():
    """Same base seed and id, different manifests: same derived seed."""
    campaign = load_run_spec(REPO / "manifests" / "campaign.yaml")
    smoke = load_run_spec(REPO / "manifests" / "smoke.yaml")
    assert campaign.job("rocket").seed == smoke.job("rocket").seed == derive_seed(42, "rocket")
    assert campaign.job("city").seed == smoke.job("city").seed == 7


# Paths.

def test_relative_image_resolves_against_the_manifest_folder(tmp_path, images, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_manifest(tmp_path, "svdflow: 1\nitems:\n  - id: a\n    image: images/a.png\n")
    monkeypatch.chdir(elsewhere)
    spec = load_run_spec(Path("..") / path.name)
    assert spec.jobs[0].image == str((images / "a.png").resolve())
    assert spec.manifest_path == path.resolve()
    assert spec.warnings == ()


def test_urls_are_left_alone(tmp_path):
    spec = spec_of(tmp_path, """
        svdflow: 1
        output:
          dir: s3://bucket/renders/{name}
        items:
          - {id: a, image: "https://example.org/a.png?x=1"}
          - {id: b, image: "memory://inputs/b.png"}
          - {id: c, image: "file:///srv/c.png"}
    """)
    assert [job.image for job in spec.jobs] == ["https://example.org/a.png?x=1", "memory://inputs/b.png",
                                                "file:///srv/c.png"]
    assert spec.output_dir == "s3://bucket/renders/m"
    assert spec.warnings == ()  # remote inputs are not checked for existence


def test_output_dir_name_templating(tmp_path, images):
    named = spec_of(tmp_path, """
        svdflow: 1
        name: spring
        output: {dir: "out/{name}-v1"}
        items: [{id: a, image: images/a.png}]
    """)
    assert named.name == "spring"
    assert named.output_dir == str((tmp_path / "out" / "spring-v1").resolve())
    unnamed = spec_of(tmp_path, "svdflow: 1\nitems: [{id: a, image: images/a.png}]\n", name="my-campaign.yaml")
    assert unnamed.name == "my-campaign"
    assert unnamed.output_dir == str((tmp_path / "renders" / "my-campaign").resolve())


def test_loaded_manifest_keeps_positions(tmp_path, images):
    loaded = load_manifest(write_manifest(tmp_path, "svdflow: 1\nitems:\n  - id: a\n    image: images/a.png\n"))
    assert loaded.source.values[("items", 0, "image")] == (4, 12)
    assert loaded.source.keys[("items", 0, "image")] == (4, 5)
    assert loaded.raw["items"][0]["id"] == "a"


# YAML reading: the loader builds data itself (for speed); it must read exactly what PyYAML reads.

YAML_SNIPPETS = {
    "numbers": "a: 1\nb: -0\nc: +7\nd: 0x1f\ne: 017\nf: 1_000\ng: 1:30\nh: .5\ni: 1.5e+3\nj: 1e5\n"
               "k: .inf\nl: -.Inf\nm: 2.\nn: 007.5\n",
    "booleans_and_nulls": "a: yes\nb: No\nc: on\nd: ~\ne: null\nf:\ng: TRUE\nh: 'yes'\n",
    "strings": "a: 'quoted: yes'\nb: \"esc\\t\"\nc: |\n  block\n  text\nd: >\n  folded\n  text\ne: café\n",
    "tags_and_dates": "a: !!str 12\nb: !!float 3\nc: 2024-05-01\nd: !!set {x, y}\ne: !!binary aGk=\n",
    "aliases_and_merges": "base: &b {w: 1, h: 2}\nlist: &l [1, 2]\nx:\n  <<: *b\n  h: 3\ny: [*l, *l, *b]\n",
    "nested": "items:\n  - id: a\n    sweep: {m: [1, 2]}\n  - [1, [2, [3]]]\n1: int key\n",
}


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", YAML_SNIPPETS)
def test_yaml_reads_like_pyyaml(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(YAML_SNIPPETS[name])
    data, _, duplicates = read_document(path)
    assert duplicates == []
    assert _same(data, yaml.safe_load(YAML_SNIPPETS[name]))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_yaml_reads_files_like_pyyaml(path):
    data, _, duplicates = read_document(path)
    assert duplicates == []
    assert _same(data, yaml.safe_load(path.read_text()))


def test_duplicate_keys_keep_the_first_value():
    """PyYAML keeps the last duplicate silently; svdflow reports it and keeps the first, where positions point."""
    data, source, duplicates = read_document(REPO / "tests" / "invalid" / "duplicate_key_in_item.yaml")
    assert data["items"][0]["motion_bucket_id"] == 60
    assert source.values[("items", 0, "motion_bucket_id")] == (5, 23)
    assert [(p.line, p.col) for p in duplicates] == [(6, 5)]


def test_anchors_and_merge_keys_work_in_manifests(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        model: {source: builtin:tiny}
        defaults: &small
          width: 112
          height: 64
        items:
          - &city
            id: city
            image: images/a.png
          - <<: *city
            id: city2
            motion_bucket_id: 30
          - <<: *small
            id: big
            image: images/b.png
            width: 256
    """)
    assert [(j.id, j.image.endswith("a.png"), j.params.width, j.params.height, j.params.motion_bucket_id)
            for j in spec.jobs] == [("city", True, 112, 64, 127), ("city2", True, 112, 64, 30),
                                    ("big", False, 256, 64, 127)]


def test_merged_mapping_keeps_positions_and_finds_duplicates(tmp_path):
    path = write_manifest(tmp_path, """
        svdflow: 1
        items:
          - <<: {seed: 1}
            id: a
            image: x.png
            id: b
    """)
    data, source, duplicates = read_document(path)
    assert source.values[("items", 0, "image")] == (5, 12)
    assert [(p.line, p.col, p.message) for p in duplicates] == [
        (6, 5, "duplicate key 'items[0].id' (first set on line 4); keep one of them")]


def test_aliases_are_built_once(tmp_path):
    """A "billion laughs" document stays small: an alias is the object it refers to."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    data, _, _ = read_document(path)
    assert data["a8"][0] is data["a7"] and data["a8"][9] is data["a7"]


# Warnings: legal but likely unintended; never errors.

def test_untrained_size_warns_with_a_hub_model(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        items:
          - id: a
            image: images/a.png
            width: 512
            height: 512
          - id: b
            image: images/b.png
    """)
    assert [str(w) for w in spec.warnings] == [
        f"{tmp_path / 'm.yaml'}:5:12: item 'a': 512x512 is not a size SVD was trained at (1024x576 or "
        "576x1024); expect weaker results"]
    assert len(spec.jobs) == 2


def test_untrained_size_from_defaults_points_at_defaults_once_per_item(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        defaults: {width: 512, height: 512}
        items:
          - id: a
            image: images/a.png
            sweep: {motion_bucket_id: [1, 2, 3]}
    """)
    assert [(w.line, w.col) for w in spec.warnings] == [(2, 19)]
    assert len(spec.jobs) == 3


def test_builtin_tiny_does_not_warn_about_size_or_motion(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        model: {source: builtin:tiny}
        defaults: {width: 112, height: 64, motion_bucket_id: 300}
        items: [{id: a, image: images/a.png}]
    """)
    assert spec.warnings == ()


def test_motion_bucket_above_trained_range_warns(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        items:
          - id: a
            image: images/a.png
            motion_bucket_id: 300
    """)
    assert [str(w) for w in spec.warnings] == [
        f"{tmp_path / 'm.yaml'}:5:23: item 'a': motion_bucket_id 300 is above the trained range 0-255; "
        "motion may break up"]


def test_missing_local_image_warns(tmp_path):
    spec = spec_of(tmp_path, "svdflow: 1\nitems:\n  - id: a\n    image: nowhere/a.png\n")
    assert messages(spec.warnings) == [
        f"item 'a': image {(tmp_path / 'nowhere' / 'a.png').resolve()} does not exist; its jobs will fail "
        "until it does"]
    assert [job.id for job in spec.jobs] == ["a"]


def test_guidance_falling_across_frames_warns(tmp_path, images):
    spec = spec_of(tmp_path, """
        svdflow: 1
        model: {source: builtin:tiny}
        items:
          - {id: a, image: images/a.png, min_guidance_scale: 4.0, max_guidance_scale: 2.0}
    """)
    assert messages(spec.warnings) == [
        "item 'a': min_guidance_scale 4.0 is above max_guidance_scale 2.0; guidance will fall across frames"]


# The examples users copy.

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifest_is_valid_and_clean(path):
    spec = load_run_spec(path)
    assert spec.jobs
    assert spec.warnings == ()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifest_starts_with_the_schema_modeline(path):
    assert path.read_text().splitlines()[0] == MODELINE
    assert (path.parent / "../schemas/manifest.schema.json").resolve().is_file()


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"campaign.yaml", "smoke.yaml", "sweep.yaml"}
