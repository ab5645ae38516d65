"""The draft tier (cfg_until, cache_interval): in the key only when used, and what it skips."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import REPO, recorded, write_image, write_manifest

from svdflow.api import load_run_spec, plan_run, run_manifest
from svdflow.manifest.schema import PARAMETERS, RELEASE_0_1_PARAMETERS, JobParams
from svdflow.outputs.index import RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.pipeline.hooks.draft import DEEP_HOOK, STEPS_HOOK, DraftPlan, deep_blocks
from svdflow.pipeline.hooks.sequential_cfg import set_sequential_cfg
from svdflow.pipeline.render import denoise_latents, render_frames, torch_threads
from svdflow.run.keys import key_material

RELEASE = REPO / "tests" / "fixtures" / "release-0.1-smoke"


def test_release_0_1_keys_do_not_move_and_new_parameters_enter_only_when_used():
    """The release's jobs keep their render keys (no draft parameter in their material), and a draft
    value enters the render key only, not the output key."""
    index = RunIndex.load(OutputStore(str(RELEASE)))  # format 1, upgraded as it is read
    assert index.format_read == 1
    for entry in index.entries.values():
        render = entry.key_material.render
        assert "cfg_until" not in render.params and "cache_interval" not in render.params
        assert render.params.keys() == set(RELEASE_0_1_PARAMETERS) - {"playback_fps"}
        assert entry.key_material.render_key == entry.render_key, entry.id
    job = load_run_spec(REPO / "manifests" / "smoke.yaml").jobs[0]
    final = key_material(job, "0" * 64, load_run_spec(REPO / "manifests" / "smoke.yaml"))
    draft_job = replace(job, params=job.params.model_copy(update={"cfg_until": 0.5}))
    draft = key_material(draft_job, "0" * 64, load_run_spec(REPO / "manifests" / "smoke.yaml"))
    assert draft.render.params["cfg_until"] == 0.5 and "cfg_until" not in final.render.params
    assert draft.render_key != final.render_key and draft.output_key == final.output_key
    # Every parameter added since the release has a default, which means "as before".
    added = [name for name in PARAMETERS if name not in RELEASE_0_1_PARAMETERS]
    assert added == ["cfg_until", "cache_interval", "segments", "loop", "loop_frames", "interpolate"]
    assert JobParams(playback_fps=7.0).model_dump().keys() == set(RELEASE_0_1_PARAMETERS)


@pytest.mark.slow
def test_a_draft_and_a_final_of_one_item_have_their_own_keys_and_both_stay(tmp_path):
    write_image(tmp_path / "a.png", 96, 64)
    body = """
        svdflow: 1
        model: {source: "builtin:tiny"}
        hardware: {profile: cpu}
        output: {dir: out, formats: [gif]}
        defaults: {num_frames: 3, num_inference_steps: 4, width: 64, height: 64}
        items:
          - {id: a, image: a.png, sweep: {cfg_until: [1.0, 0.5], cache_interval: [1, 3]}}
    """
    manifest = write_manifest(tmp_path, body)
    ids = ["a-cfg1.0-ci1", "a-cfg1.0-ci3", "a-cfg0.5-ci1", "a-cfg0.5-ci3"]
    assert run_manifest(manifest).statuses == dict.fromkeys(ids, "done")
    entries = recorded(tmp_path / "out")
    assert len({entries[i]["key"] for i in ids}) == 4 and len({entries[i]["frames_sha256"] for i in ids}) == 4
    assert entries["a-cfg0.5-ci3"]["params"]["cfg_until"] == 0.5
    assert entries["a-cfg0.5-ci3"]["params"]["cache_interval"] == 3
    assert "cfg_until" not in entries["a-cfg1.0-ci1"]["params"]  # at its default: as release 0.1 wrote it

    # The final's key is that of the same item without any draft setting: a plain item `a` with the
    # same parameters would find it up to date.
    plain = write_manifest(tmp_path, body.replace(", sweep: {cfg_until: [1.0, 0.5], cache_interval: [1, 3]}", ""),
                           "plain.yaml")
    [planned] = plan_run(load_run_spec(plain))
    assert planned.key == entries["a-cfg1.0-ci1"]["key"]

    # A draft renders again from its entry alone, the same frames (the draft settings are in params).
    from svdflow.api import rerender

    assert rerender(str(tmp_path / "out" / "index.jsonl"), "a-cfg0.5-ci3", write=False).matches

    # Editing a draft setting is a change, named as any other.
    edited = write_manifest(tmp_path, body.replace("[1.0, 0.5]", "[1.0, 0.25]"), "m.yaml")
    reasons = {p.job.id: (p.status, p.reason) for p in plan_run(load_run_spec(edited))}
    assert reasons["a-cfg0.25-ci3"] == ("new", "not rendered yet")
    assert reasons["a-cfg1.0-ci3"][0] == "up to date"


def params(**draft) -> JobParams:
    return JobParams(num_frames=3, num_inference_steps=4, width=64, height=64, playback_fps=7.0, **draft)


class _Watch:
    """The batch of every UNet call (frames x branches at conv_in) and how often a deep block ran."""

    def __init__(self, unet):
        self.batches, self.deep_runs = [], 0
        self._handles = [
            unet.conv_in.register_forward_pre_hook(lambda _m, a: self.batches.append(a[0].shape[0] // 3)),
            # A child of a deep block runs only when the block really ran.
            unet.down_blocks[1].resnets[0].register_forward_pre_hook(lambda *_: self._ran())]

    def _ran(self) -> None:
        self.deep_runs += 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _latents(pipe, image, p):
    watch = _Watch(pipe.unet)
    try:
        with torch_threads(1):
            return denoise_latents(pipe, image, p), watch
    finally:
        watch.close()


def test_cfg_until_runs_the_conditional_branch_alone_after_its_fraction(tiny_pipe, noise_image):
    full, watch = _latents(tiny_pipe, noise_image, params())
    assert (watch.batches, watch.deep_runs) == ([2, 2, 2, 2], 4)
    draft, watch = _latents(tiny_pipe, noise_image, params(cfg_until=0.5))
    assert (watch.batches, watch.deep_runs) == ([2, 2, 1, 1], 4)
    assert draft.shape == full.shape and not torch.equal(draft, full)
    none, watch = _latents(tiny_pipe, noise_image, params(cfg_until=0.0))
    assert watch.batches == [1, 1, 1, 1]


def test_cache_interval_skips_the_deep_blocks_on_all_but_one_step_in_n(tiny_pipe, noise_image):
    full, _ = _latents(tiny_pipe, noise_image, params())
    draft, watch = _latents(tiny_pipe, noise_image, params(cache_interval=3))
    assert (watch.batches, watch.deep_runs) == ([2, 2, 2, 2], 2)  # steps 0 and 3 are full
    assert draft.shape == full.shape and not torch.equal(draft, full)
    # CFG turning off starts a new phase with a full step: 0 full, 1 cached, 2 full (batch 1), 3 cached.
    both, watch = _latents(tiny_pipe, noise_image, params(cfg_until=0.5, cache_interval=3))
    assert (watch.batches, watch.deep_runs) == ([2, 2, 1, 1], 2)
    # State is per video: the same draft again gives the same latents, and no hook stays behind.
    again, _ = _latents(tiny_pipe, noise_image, params(cfg_until=0.5, cache_interval=3))
    assert torch.equal(again, both)
    for module in (tiny_pipe.unet, *deep_blocks(tiny_pipe.unet)):
        assert not {STEPS_HOOK, DEEP_HOOK} & set(getattr(module, "_diffusers_hook", None).hooks
                                                 if hasattr(module, "_diffusers_hook") else ())


def test_the_draft_tier_under_sequential_cfg_keeps_each_branchs_features(tiny_pipe, noise_image):
    set_sequential_cfg(tiny_pipe.unet, True)
    try:
        batched, _ = _latents(tiny_pipe, noise_image, params(cfg_until=0.5, cache_interval=3))
        sequential, watch = _latents(tiny_pipe, noise_image, params(cfg_until=0.5, cache_interval=3))
    finally:
        set_sequential_cfg(tiny_pipe.unet, False)
    # Two calls of one branch per step while CFG runs, then one; the deep blocks run on full steps
    # only, once per call.
    assert (watch.batches, watch.deep_runs) == ([1, 1, 1, 1, 1, 1], 3)
    torch.testing.assert_close(sequential, batched, rtol=1e-4, atol=1e-5)


def test_draft_frames_have_the_shape_of_the_final_ones(tiny_pipe, noise_image):
    with torch_threads(1):
        final = render_frames(tiny_pipe, noise_image, params())
        draft = render_frames(tiny_pipe, noise_image, params(cfg_until=0.5, cache_interval=3))
    assert draft.shape == final.shape == (3, 64, 64, 3) and draft.dtype == np.uint8
    assert not np.array_equal(draft, final)


def test_the_plan_says_when_cfg_runs_and_what_is_a_draft():
    plan = DraftPlan(steps=25, cfg_until=0.5)
    assert [plan.uses_cfg(s) for s in (0, 12, 13, 24)] == [True, True, False, False]
    assert plan.active and not DraftPlan(steps=25).active and DraftPlan(25, cache_interval=2).active
