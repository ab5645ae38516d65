"""The render and output keys: what is in each, and the rule that keeps later parameters out of them
while they are at their defaults (so that adding a parameter never re-renders anyone's campaign)."""

from __future__ import annotations

import random
from typing import Literal

import pytest
from pydantic import Field, create_model

from svdflow.manifest.schema import JobParams
from svdflow.outputs import entry as entry_module
from svdflow.outputs.entry import KeyMaterial, ModelRef, OutputMaterial, RenderMaterial
from svdflow.run.planning import explain_change

RELEASE_PARAMS = {"num_frames": 4, "num_inference_steps": 2, "fps": 7, "playback_fps": 7.0, "motion_bucket_id": 127,
                  "noise_aug_strength": 0.02, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, "width": 112,
                  "height": 64, "resize": "crop", "seed": 42}
# JobParams as a later svdflow will have it: one parameter that decides the pixels, one that decides
# only the files (named in OUTPUT_PARAMETERS by the test that uses it).
LaterParams = create_model(
    "LaterParams", __base__=JobParams,
    cache_interval=(int, Field(1, description="reuse deep features for N-1 of every N steps")),
    loop=(Literal["none", "pingpong"], Field("none", description="loop the clip")))


def material(params, *, formats=("mp4",), crf=18, prores_profile="hq") -> KeyMaterial:
    return KeyMaterial(
        render=RenderMaterial.of(render_version="1", input_sha256="0" * 64, params=params,
                                 model=ModelRef(source="builtin:tiny", revision=None, variant=None)),
        output=OutputMaterial.of(formats=formats, params=params, crf=crf, prores_profile=prores_profile))


@pytest.fixture
def loop_shapes_the_files(monkeypatch):
    monkeypatch.setattr(entry_module, "OUTPUT_PARAMETERS", (*entry_module.OUTPUT_PARAMETERS, "loop"))


def test_a_parameter_added_later_changes_no_key_at_its_default(loop_shapes_the_files):
    today = material(JobParams(**RELEASE_PARAMS))
    later = material(LaterParams(**RELEASE_PARAMS))
    assert (later.key, later.render_key, later.output_key) == (today.key, today.render_key, today.output_key)
    assert later.model_dump(mode="json") == today.model_dump(mode="json")


def test_a_later_parameter_off_its_default_enters_its_own_key_only(loop_shapes_the_files):
    today = material(LaterParams(**RELEASE_PARAMS))
    cached = material(LaterParams(**RELEASE_PARAMS, cache_interval=2))
    looped = material(LaterParams(**RELEASE_PARAMS, loop="pingpong"))
    assert cached.render_key != today.render_key and cached.output_key == today.output_key
    assert cached.render.params["cache_interval"] == 2 and "cache_interval" not in cached.output.params
    assert looped.render_key == today.render_key and looped.output_key != today.output_key
    assert looped.output.params == {"playback_fps": 7.0, "loop": "pingpong"}
    assert explain_change(today, cached) == "cache_interval default -> 2"
    assert explain_change(cached, today) == "cache_interval 2 -> default"
    assert explain_change(today, looped) == "loop default -> pingpong"


def test_release_parameters_are_always_in_and_playback_fps_decides_only_the_files():
    params = JobParams(**RELEASE_PARAMS)
    keyed = material(params)
    assert keyed.render.params == {k: v for k, v in RELEASE_PARAMS.items() if k != "playback_fps"}
    slower = material(JobParams(**{**RELEASE_PARAMS, "playback_fps": 12.0}))
    assert (slower.render_key, slower.output_key != keyed.output_key) == (keyed.render_key, True)
    assert explain_change(keyed, slower) == "playback_fps 7.0 -> 12.0"


def test_output_settings_enter_only_while_a_format_that_uses_them_is_listed():
    params = JobParams(**RELEASE_PARAMS)
    gif = material(params, formats=("gif",))
    assert gif.output.model_dump(mode="json") == {"formats": ["gif"], "params": {"playback_fps": 7.0}}
    assert material(params, formats=("gif",), crf=30, prores_profile="lt").output_key == gif.output_key

    mp4 = material(params, formats=("mp4", "gif"))
    assert mp4.output.formats == ["gif", "mp4"] and mp4.output.crf == 18 and mp4.output.prores_profile is None
    assert material(params, formats=("gif", "mp4")).output_key == mp4.output_key  # order is no change
    assert material(params, formats=("mp4",), prores_profile="lt").output_key == material(params).output_key
    assert explain_change(mp4, material(params, formats=("mp4", "gif"), crf=23)) == "crf 18 -> 23"

    prores = material(params, formats=("prores",))
    assert (prores.output.crf, prores.output.prores_profile) == (None, "hq")
    assert explain_change(prores, material(params, formats=("prores",), prores_profile="lt")) == (
        "prores_profile hq -> lt")
    assert explain_change(mp4, material(params, formats=("mp4", "webm"))) == "formats gif, mp4 -> mp4, webm"
    assert {m.render_key for m in (gif, mp4, prores)} == {gif.render_key}  # the pixels never change


def test_segments_decide_the_pixels_loop_and_interpolate_only_the_files():
    plain = material(JobParams(**RELEASE_PARAMS))
    at_defaults = material(JobParams(**RELEASE_PARAMS, segments=1, loop="none", loop_frames=None, interpolate=1))
    assert at_defaults.model_dump(mode="json") == plain.model_dump(mode="json")  # a campaign of 0.1 keeps its keys

    chained = material(JobParams(**RELEASE_PARAMS, segments=2))
    assert chained.render_key != plain.render_key and chained.output_key == plain.output_key
    assert explain_change(plain, chained) == "segments default -> 2"
    for change in ({"loop": "pingpong"}, {"loop": "crossfade", "loop_frames": 3}, {"interpolate": 2}):
        shaped = material(JobParams(**{**RELEASE_PARAMS, **change}))
        assert shaped.render_key == plain.render_key and shaped.output_key != plain.output_key, change
        assert shaped.output.params == {"playback_fps": 7.0, **change}, change
    assert explain_change(material(JobParams(**RELEASE_PARAMS, loop="crossfade", loop_frames=3)),
                          material(JobParams(**RELEASE_PARAMS, loop="crossfade", loop_frames=4))) == (
        "loop_frames 3 -> 4")


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("formats", [("mp4",), ("gif", "prores"), ("frames",)])
def test_the_hand_written_canonical_json_is_the_models_own_dump(fp8, formats):
    """Keys hash the materials' JSON, written out by hand for speed: it must stay the model's dump."""
    from svdflow.outputs.entry import canonical_json

    params = LaterParams(**RELEASE_PARAMS, cache_interval=3)
    built = KeyMaterial(
        render=RenderMaterial.of(render_version="1", input_sha256="0" * 64, params=params, fp8=fp8,
                                 model=ModelRef(source="org/model", revision="main", variant="fp16")),
        output=OutputMaterial.of(formats=formats, params=params, crf=23, prores_profile="lt"))
    assert built.render.canonical == canonical_json(built.render)
    assert built.output.canonical == canonical_json(built.output)
    assert built.canonical_json() == canonical_json(built)
    assert KeyMaterial.model_validate_json(built.canonical_json()).key == built.key  # as read back from an index


@pytest.mark.parametrize("hardware", ["{profile: cpu}", "{profile: cpu, fp8: true}"])
def test_a_plans_keys_are_those_of_the_material_it_builds_for_the_jobs_that_render(tmp_path, hardware):
    """A plan computes every job's keys without building its material (job_keys): the same keys."""
    from conftest import write_manifest

    from svdflow.manifest import load_run_spec
    from svdflow.run.keys import job_keys, key_material

    spec = load_run_spec(write_manifest(tmp_path, f"""
        svdflow: 1
        model: {{source: 'builtin:tiny'}}
        hardware: {hardware}
        output: {{dir: out, formats: [mp4, gif, prores], crf: 20}}
        defaults: {{num_frames: 4, num_inference_steps: 2, width: 64, height: 64}}
        items:
          - {{id: a, image: a.png, sweep: {{motion_bucket_id: [1, 200], loop: [none, crossfade]}}}}
          - {{id: b, image: b.png, segments: 2, interpolate: 2, playback_fps: 12.5}}
    """))
    for job in spec.jobs:
        keys, material = job_keys(job, "ab" * 32, spec), key_material(job, "ab" * 32, spec)
        assert (keys.key, keys.render_key, keys.output_key) == (material.key, material.render_key, material.output_key)


def test_the_params_json_put_together_from_cached_pieces_is_json_dumps():
    """render_canonical writes a job's params from `"name":value` pieces kept per campaign: the same
    bytes as the canonical dump for every JSON scalar (1, 1.0 and True kept apart)."""
    from svdflow.outputs.entry import _dumps, _params_json

    rng = random.Random(0)
    values = [True, False, 1, 0, -3, 1.0, 0.02, 1e-05, 1e20, None, "crop", "é", 2**63 - 1, 7.0, 127]
    names = ["fps", "seed", "a", "zz", "motion_bucket_id", "x_y"]
    for _ in range(500):
        params = {name: rng.choice(values) for name in rng.sample(names, rng.randint(0, len(names)))}
        assert _params_json(params) == _dumps(params), params


@pytest.mark.parametrize("output", [False, True])
def test_the_keyed_params_json_of_one_pass_is_that_of_the_keyed_params(output):
    """job_keys writes a job's keyed params in one pass over the sorted fields: the bytes of the dict
    RenderMaterial keeps, with a later parameter in only off its default."""
    from svdflow.outputs.entry import _params_json, keyed_params, keyed_params_json

    rng = random.Random(1)
    for _ in range(200):
        params = LaterParams(**{**RELEASE_PARAMS, "seed": rng.randrange(2**63), "fps": rng.choice([6, 7, 30]),
                                "noise_aug_strength": rng.choice([0.0, 0.02, 1.0]), "cache_interval": rng.choice([1, 3]),
                                "loop": rng.choice(["none", "pingpong"])})
        assert keyed_params_json(params, output=output) == _params_json(keyed_params(params, output=output))
