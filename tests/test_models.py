"""Loading pipelines: builtin:tiny, local folders and hub ids through the real from_pretrained path.

No network here: hub ids are exercised offline, against a hub cache laid out in a tmp folder.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svdflow.errors import EXIT_ENVIRONMENT, ModelLoadError, exit_code_for
from svdflow.models.tiny_config import TINY_REVISION
from svdflow.pipeline.models import (
    BUILTIN_TINY,
    ModelSpec,
    describe_source,
    load_pipeline,
    resolved_revision,
)
from svdflow.pipeline.tiny import (
    SVD_SCHEDULER_CONFIG,
    build_full_size_pipeline,
    build_tiny_pipeline,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CALL = {"height": 64, "width": 112, "num_frames": 8, "num_inference_steps": 2, "output_type": "np"}


def render(pipe, image, seed: int = 0) -> np.ndarray:
    return pipe(image, generator=torch.Generator().manual_seed(seed), **CALL).frames


def state_dicts_equal(a, b) -> bool:
    for name in ("unet", "vae", "image_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


def load_error(spec: ModelSpec, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(spec, **kwargs)
    assert exit_code_for(info.value) == EXIT_ENVIRONMENT
    return str(info.value)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def image():
    pixels = np.random.default_rng(0).integers(0, 256, (64, 112, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def reference(tiny, image):
    return render(tiny, image)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    tiny.save_pretrained(folder, safe_serialization=True)
    return folder


def test_tiny_renders_frames_of_the_requested_shape(reference):
    assert reference.shape == (1, 8, 64, 112, 3)
    assert reference.dtype == np.float32
    assert np.isfinite(reference).all()
    assert reference.min() >= 0.0 and reference.max() <= 1.0
    assert reference.std() > 0.01  # noise, not a constant image


def test_tiny_is_svd_shaped(tiny):
    assert tiny.vae_scale_factor == 8
    assert tiny.image_encoder.config.image_size == 224
    assert tiny.unet.dtype == torch.float32
    assert {k: tiny.scheduler.config[k] for k in SVD_SCHEDULER_CONFIG} == SVD_SCHEDULER_CONFIG
    assert tiny._progress_bar_config == {"disable": True}


def test_tiny_builds_have_identical_weights_and_frames(tiny, image, reference):
    again = build_tiny_pipeline()
    assert state_dicts_equal(tiny, again)
    assert np.array_equal(render(again, image), reference)


def test_tiny_weights_are_pinned(tiny):
    # builtin-tiny-v1 names exactly these weights in every index. If this fails, the weights changed
    # (a new fill rule, a renamed parameter, another RNG): bump TINY_REVISION, then update the hash.
    digest = hashlib.sha256()
    for name in ("unet", "vae", "image_encoder"):
        state = getattr(tiny, name).state_dict()
        for key in sorted(state):
            digest.update(f"{name}.{key}".encode())
            digest.update(state[key].contiguous().numpy().tobytes())
    assert TINY_REVISION == "builtin-tiny-v1"
    assert digest.hexdigest() == "3b00afb1755c9fd0395caeb51d5b5b709e05b78f2f14f9b970ac95836bda3e16"


def test_building_tiny_leaves_the_global_rng_alone():
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    build_tiny_pipeline()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(4), expected)


def test_builtin_tiny_loads_through_load_pipeline(tiny):
    spec = ModelSpec(BUILTIN_TINY)
    pipe = load_pipeline(spec)
    assert describe_source(BUILTIN_TINY) == "builtin"
    assert state_dicts_equal(pipe, tiny)
    assert resolved_revision(pipe, spec) == TINY_REVISION == "builtin-tiny-v1"
    half = load_pipeline(spec, torch_dtype=torch.bfloat16)
    assert half.unet.dtype == torch.bfloat16
    assert torch.equal(half.unet.conv_in.weight, tiny.unet.conv_in.weight.to(torch.bfloat16))


def test_saved_folder_loads_with_from_pretrained_and_renders_the_same_frames(saved, image, reference):
    spec = ModelSpec(str(saved))
    pipe = load_pipeline(spec)
    assert describe_source(str(saved)) == "local"
    assert resolved_revision(pipe, spec) is None
    assert pipe._progress_bar_config == {"disable": True}
    # Bit-identical, not merely close: load_pipeline realigns the weights safetensors mapped from the file.
    assert np.array_equal(render(pipe, image), reference)


def test_relative_folder_is_read_from_the_manifest_folder(tiny, saved, tmp_path, monkeypatch):
    manifest_dir = saved.parent
    monkeypatch.chdir(tmp_path)  # the cwd must not matter
    pipe = load_pipeline(ModelSpec("./tiny"), manifest_dir=str(manifest_dir))
    assert state_dicts_equal(pipe, tiny)
    # Written without ./, an existing folder still wins over the hub id of the same name.
    assert describe_source("tiny", manifest_dir) == "local"
    assert describe_source("tiny") == "hub"


def test_fp16_variant_files_load_with_variant_fp16(tiny, tmp_path):
    folder = tmp_path / "tiny-fp16"
    tiny.save_pretrained(folder, safe_serialization=True, variant="fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    pipe = load_pipeline(ModelSpec(str(folder), variant="fp16"))
    assert state_dicts_equal(pipe, tiny)


def test_missing_variant_says_which_files_it_needs(saved):
    assert load_error(ModelSpec(str(saved), variant="fp16")) == (
        f"model.variant: fp16: needs `*.fp16.safetensors` weight files, and {saved} has none. "
        "Set variant: null to load its default weight files."
    )


def test_missing_folder(tmp_path):
    assert load_error(ModelSpec("./models/svd"), manifest_dir=str(tmp_path)) == (
        f"model.source: ./models/svd ({tmp_path}/models/svd): no such folder; relative paths are read "
        "from the manifest's folder. Fix the path, or give a hub id (org/name) to download the model."
    )


def test_folder_without_model_index(tmp_path):
    (tmp_path / "weights").mkdir()
    assert load_error(ModelSpec(str(tmp_path / "weights"))) == (
        f"model.source: {tmp_path}/weights: no model_index.json in this folder, so it is not a diffusers "
        "pipeline folder. Point at the folder that holds model_index.json, or make one with "
        "`hf download <org/name> --local-dir <folder>` or `pipe.save_pretrained(<folder>)`."
    )


def test_folder_of_another_pipeline(tmp_path):
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert load_error(ModelSpec(str(tmp_path / "sd"))) == (
        f"model.source: {tmp_path}/sd: model_index.json describes a StableDiffusionPipeline, not a "
        "StableVideoDiffusionPipeline; svdflow renders with Stable Video Diffusion models only."
    )


def test_folder_with_only_pickled_weights_is_refused(tiny, tmp_path):
    folder = tmp_path / "pickled"
    tiny.save_pretrained(folder, safe_serialization=False)
    message = load_error(ModelSpec(str(folder)))
    assert message.startswith(f"model.source: {folder}: ")
    # diffusers stops at whichever component it loads first; the order is not fixed.
    assert re.search(
        r": (unet|vae|image_encoder) has no safetensors weights: only pickled \.bin weights", message
    )
    assert "safe_serialization=True" in message


def test_revision_on_a_local_folder_is_an_error(saved):
    assert load_error(ModelSpec(str(saved), revision="main")) == (
        "model.revision: main: a local folder has no revisions (they are for hub models); set revision: null."
    )


def test_builtin_errors():
    assert load_error(ModelSpec("builtin:huge")) == (
        "model.source: builtin:huge: no such builtin model; the builtins are builtin:tiny and builtin:toy. "
        "Use a hub id (org/name) or a local folder for anything else."
    )
    assert load_error(ModelSpec(BUILTIN_TINY, variant="fp16")) == (
        "model.variant: fp16: builtin:tiny is built from code and has no weight-file variants; set variant: null."
    )


def test_offline_hub_id_not_in_cache_fails_fast_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    message = load_error(ModelSpec("acme/not-downloaded"))
    assert time.monotonic() - started < 5
    assert message == (
        "model.source: acme/not-downloaded: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
        "forbids downloading it. Download it on a connected machine with `hf download acme/not-downloaded` "
        "(and copy the cache, HF_HOME, here), or set HF_HUB_OFFLINE=0 to let svdflow download it."
    )


def test_cached_hub_id_loads_offline_and_reports_its_commit(tiny, saved, tmp_path, monkeypatch):
    # The layout huggingface_hub writes: refs/main names the commit whose snapshot holds the files.
    repo = tmp_path / "cache" / "models--acme--tiny-svd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.parent.mkdir()
    shutil.copytree(saved, snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))

    spec = ModelSpec("acme/tiny-svd")
    pipe = load_pipeline(spec)
    assert describe_source(spec.source) == "hub"
    assert state_dicts_equal(pipe, tiny)
    assert resolved_revision(pipe, spec) == COMMIT

    assert load_error(ModelSpec("acme/tiny-svd", revision="v2")) == (
        "model.source: acme/tiny-svd: not in the local Hugging Face cache at revision v2, and "
        "HF_HUB_OFFLINE=1 forbids downloading it. Download it on a connected machine with "
        "`hf download acme/tiny-svd --revision v2` (and copy the cache, HF_HOME, here), or set "
        "HF_HUB_OFFLINE=0 to let svdflow download it."
    )


def test_invalid_hub_id():
    assert load_error(ModelSpec("my model!")) == (
        "model.source: my model!: neither an existing folder nor a valid hub id (org/name). Write a "
        "local folder as a path (./models/svd), or fix the id."
    )


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("builtin:tiny", "builtin"),
        ("./models/svd", "local"),
        ("../svd", "local"),
        ("/abs/svd", "local"),
        ("~/svd", "local"),
        ("stabilityai/stable-video-diffusion-img2vid-xt", "hub"),
    ],
)
def test_describe_source(source, kind):
    assert describe_source(source) == kind


# Parameter counts of the released checkpoints' architectures (SVD and SVD-XT share them; only the
# UNet's num_frames differs). Built on the meta device: nothing is allocated.
@pytest.mark.parametrize(("variant", "num_frames"), [("svd", 14), ("xt", 25)])
def test_full_size_architecture(variant, num_frames):
    pipe = build_full_size_pipeline(variant, dtype=torch.float16, device="meta")
    counts = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("unet", "vae", "image_encoder")
    }
    assert counts == {"unet": 1_524_623_082, "vae": 97_742_847, "image_encoder": 632_076_800}
    assert pipe.unet.config.num_frames == num_frames
    assert pipe.unet.dtype == torch.float16 and pipe.unet.device.type == "meta"
    assert pipe.vae.config.force_upcast and pipe.vae.config.scaling_factor == 0.18215
    assert pipe.vae_scale_factor == 8
    assert pipe.feature_extractor.crop_size["height"] == 224


def test_full_size_rejects_unknown_variants():
    with pytest.raises(ValueError, match="variant must be one of"):
        build_full_size_pipeline("xxl", device="meta")


def test_render_frames_quantises_the_pipelines_floats_half_up(tiny, image, reference):
    from svdflow.manifest.schema import JobParams
    from svdflow.pipeline.render import render_frames, tensor_to_uint8

    params = JobParams(num_inference_steps=2, height=64, width=112, num_frames=8, min_guidance_scale=1.0,
                       max_guidance_scale=3.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, seed=0)
    frames = render_frames(tiny, image, params)
    # The numpy formula the frames were always defined by, on the pipeline's own numpy output.
    assert np.array_equal(frames, (np.clip(reference[0], 0, 1) * 255.0 + 0.5).astype(np.uint8))
    edges = torch.tensor([-0.1, 0.0, 0.5 / 255, 1.5 / 255 - 1e-7, 254.5 / 255, 1.0, 1.2]).reshape(1, 1, 1, 7).expand(1, 3, 1, 7)
    assert tensor_to_uint8(edges)[0, 0, :, 0].tolist() == [0, 0, 1, 1, 255, 255, 255]
