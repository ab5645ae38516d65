"""builtin:toy: the trained pipeline shipped as package data, loaded like any local model folder, and
what its conditioning means, measured on images held out from its training (tests/fixtures/toy-heldout
holds procedural images drawn with seeds training never used; city.png was never cropped for it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svdflow.models.defaults import model_defaults
from svdflow.models.source import BUILTIN_TOY, TOY_FOLDER
from svdflow.models.toy_checks import MOTION_BUCKETS, first_frame_ssim, mean_flow, render_check
from svdflow.models.toy_config import TOY_NUM_FRAMES, TOY_REVISION, TOY_UNET_CONFIG
from svdflow.pipeline.models import ModelSpec, load_pipeline, resolved_revision

REPO = Path(__file__).resolve().parents[1]
HELDOUT = sorted((REPO / "tests" / "fixtures" / "toy-heldout").glob("*.png")) + [REPO / "manifests" / "images" / "city.png"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Frames depend on the thread count (reduction order); one thread is also the fastest at these sizes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    assert (defaults.values, defaults.basis) == ({"num_frames": TOY_NUM_FRAMES}, "unet config")
    index = json.loads((TOY_FOLDER / "unet" / "config.json").read_text())
    assert index["num_frames"] == TOY_NUM_FRAMES


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


@pytest.mark.slow
@pytest.mark.parametrize("path", HELDOUT[:2] + HELDOUT[-1:], ids=lambda p: p.stem)
def test_toy_semantics_on_held_out_images(toy, path):
    image = Image.open(path).convert("RGB")
    clips = {mb: render_check(toy, image, mb) for mb in MOTION_BUCKETS}
    # The first frame is the input.
    assert min(first_frame_ssim(clip[0], image) for clip in clips.values()) >= 0.75
    # More motion_bucket_id, more motion: strictly, and the most at least three times the least.
    flows = [mean_flow(clips[mb]) for mb in MOTION_BUCKETS]
    assert flows == sorted(flows) and len(set(flows)) == len(flows), flows
    assert flows[-1] >= 3 * flows[0], flows
    # The same seed gives the same frames.
    again = render_check(toy, image, MOTION_BUCKETS[0])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, clips[MOTION_BUCKETS[0]]))
