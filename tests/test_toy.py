"""builtin:toy: the trained pipeline shipped as package data, loaded like any local model folder, and
what its conditioning means, measured on images held out from its training (tests/fixtures/toy-heldout
holds a procedural image drawn with a seed training never used; city.png was never cropped for it).
A render at the toy's 256x144 takes 20-130 s on a shared 2-core CPU, so the semantics test is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svdflow.models.defaults import fixed_model_defaults, model_defaults
from svdflow.models.source import BUILTIN_TOY, TOY_FOLDER
from svdflow.models.toy_checks import MOTION_BUCKETS, first_frame_ssim, mean_flow, render_check
from svdflow.models.toy_config import TOY_DEFAULTS, TOY_NUM_FRAMES, TOY_REVISION, TOY_UNET_CONFIG
from svdflow.pipeline.models import ModelSpec, load_pipeline, resolved_revision

REPO = Path(__file__).resolve().parents[1]
HELDOUT = [REPO / "tests" / "fixtures" / "toy-heldout" / "procedural-90001.png", REPO / "manifests" / "images" / "city.png"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return load_pipeline(ModelSpec(BUILTIN_TOY))


def test_toy_is_the_shipped_folder_loaded_like_a_local_model(toy):
    assert Path(toy.unet.config._name_or_path).resolve() == (TOY_FOLDER / "unet").resolve()
    assert {k: v for k, v in toy.unet.config.items() if k in TOY_UNET_CONFIG} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in TOY_UNET_CONFIG.items()}
    assert type(toy).__name__ == "StableVideoDiffusionPipeline"
    assert resolved_revision(toy, ModelSpec(BUILTIN_TOY)) == TOY_REVISION == "builtin-toy-v1"
    weights = sum(p.stat().st_size for p in TOY_FOLDER.rglob("*.safetensors"))
    assert weights <= 25_000_000
    assert not list(TOY_FOLDER.rglob("*.bin"))


def test_toy_defaults_come_from_its_config():
    defaults = model_defaults(BUILTIN_TOY, None, REPO)
    assert (defaults.values, defaults.fixed, defaults.basis) == (
        {"num_frames": TOY_NUM_FRAMES, "min_guidance_scale": 1.0, "max_guidance_scale": 1.0}, {}, "config")
    assert fixed_model_defaults(BUILTIN_TOY).values == TOY_DEFAULTS
    assert json.loads((TOY_FOLDER / "unet" / "config.json").read_text())["num_frames"] == TOY_NUM_FRAMES


def test_toy_builtin_errors():
    from svdflow.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as info:
        load_pipeline(ModelSpec(BUILTIN_TOY, revision="main"))
    assert str(info.value) == (
        "model.revision: main: builtin:toy is shipped with svdflow and has one revision, builtin-toy-v1; "
        "set revision: null.")
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(ModelSpec(BUILTIN_TOY, variant="fp16"))
    assert str(info.value) == (
        "model.variant: fp16: builtin:toy is shipped with svdflow and has no weight-file variants; set variant: null.")


def test_toy_same_seed_same_frames(toy):
    image = Image.open(HELDOUT[0]).convert("RGB")
    call = {"height": 48, "width": 64, "num_frames": TOY_NUM_FRAMES, "num_inference_steps": 2, "output_type": "np"}
    first, second = (toy(image, generator=torch.Generator().manual_seed(3), **call).frames for _ in range(2))
    other = toy(image, generator=torch.Generator().manual_seed(4), **call).frames
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.slow
@pytest.mark.parametrize("path", HELDOUT[1:], ids=lambda p: p.stem)
def test_toy_semantics_on_a_held_out_image(toy, path):
    image = Image.open(path).convert("RGB")
    clips = {mb: render_check(toy, image, mb) for mb in MOTION_BUCKETS}
    # The first frame is the input.
    assert min(first_frame_ssim(clip[0], image) for clip in clips.values()) >= 0.75
    # More motion_bucket_id, more motion: strictly, and the most at least three times the least.
    flows = [mean_flow(clips[mb]) for mb in MOTION_BUCKETS]
    assert flows == sorted(flows) and len(set(flows)) == len(flows), flows
    assert flows[-1] >= 3 * flows[0], flows
