"""Hardware: profile resolution on fake machines, the out-of-memory ladder, the hooks (sequential CFG,
regional compilation), the compile decision and its warm-cache marker, and the process-wide settings a
run restores. No GPU needed: DeviceFacts is passed in, OOM is injected."""

from __future__ import annotations

import pytest
import torch
from conftest import recorded, write_image, write_manifest

from svdflow import hardware
from svdflow.errors import DeviceError, RenderError
from svdflow.hardware import (
    GIB,
    DeviceFacts,
    ResolvedHardware,
    compile_pays_off,
    resolve_hardware,
    shape_groups,
)
from svdflow.manifest import load_run_spec
from svdflow.manifest.schema import Hardware
from svdflow.pipeline.apply import set_forward_chunking
from svdflow.pipeline.compile import configure_compile_cache
from svdflow.pipeline.hooks.sequential_cfg import HOOK_NAME, set_sequential_cfg
from svdflow.pipeline.ladder import next_rung
from svdflow.pipeline.process_state import ProcessChanges
from svdflow.pipeline.render import torch_threads
from svdflow.pipeline.session import PipelineSession

NO_GPU = DeviceFacts(0, False, {})
H200 = DeviceFacts(1, False, {"cuda:0": 80 * GIB}, {"cuda:0": "NVIDIA H200"})
SMALL_GPU = DeviceFacts(1, False, {"cuda:0": 8 * GIB})


def resolve(facts: DeviceFacts, local_rank: int = 0, **requested) -> ResolvedHardware:
    return resolve_hardware(Hardware(**requested), facts, local_rank=local_rank)


def test_no_gpu_resolves_to_the_cpu_profile():
    hw = resolve(NO_GPU)
    assert (hw.profile, hw.device, hw.dtype, hw.offload, hw.compile) == ("cpu", "cpu", "float32", "none", False)


def test_auto_on_a_big_free_gpu_is_max_speed_and_says_why():
    hw = resolve(H200)
    assert (hw.profile, hw.device, hw.dtype, hw.offload, hw.sequential_cfg) == (
        "max-speed", "cuda:0", "float16", "none", False)
    assert hw.reason.startswith("80.0 GiB free on cuda:0 (>= 24)")
    # Nothing planned: a compile cannot pay for itself.
    assert hw.compile is False and "compile off" in hw.reason


def test_auto_on_8_gib_free_is_low_vram():
    hw = resolve(SMALL_GPU)
    assert hw.profile == "low-vram"
    assert (hw.offload, hw.forward_chunking, hw.decode_chunk_size, hw.sequential_cfg, hw.compile) == (
        "group", True, 2, True, False)


def test_explicit_fields_override_the_profile():
    hw = resolve(SMALL_GPU, profile="low-vram", offload="none", decode_chunk_size=4, compile="on")
    assert (hw.offload, hw.decode_chunk_size, hw.compile) == ("none", 4, True)
    assert hw.forward_chunking is True  # not set: the profile's


def test_missing_cuda_index_is_a_device_error_with_the_fix():
    with pytest.raises(DeviceError) as error:
        resolve(H200, device="cuda:3")
    assert str(error.value) == ("hardware.device: 'cuda:3' is not available (this machine has 1 CUDA device); "
                                "use device: auto or cpu")


def test_local_rank_picks_the_device_and_its_free_memory():
    facts = DeviceFacts(4, False, {f"cuda:{i}": (80 if i != 2 else 8) * GIB for i in range(4)})
    hw = resolve(facts, local_rank=2)
    assert (hw.device, hw.profile) == ("cuda:2", "low-vram")


def test_compile_auto_compiles_only_when_the_planned_work_wins():
    reference = hardware.REFERENCE_SHAPE
    threshold = hardware.COMPILE_PAYS_OFF_STEPS
    assert compile_pays_off(threshold - 10)[0] is False
    assert compile_pays_off(threshold + 10)[0] is True
    # A warm inductor cache makes five videos enough; two shapes cost two compiles.
    assert compile_pays_off({reference: 150}, warm=True)[0] is True
    assert compile_pays_off({reference: 150})[0] is False
    assert compile_pays_off({reference: threshold + 10, (25, 576, 512): 10})[0] is False
    # Quarter the pixels, a quarter of the saving per step.
    assert compile_pays_off({(25, 288, 512): threshold + 10})[0] is False

    planned = {reference: threshold + 10}
    on = resolve_hardware(Hardware(), H200, planned_unet_steps=planned)
    assert on.compile is True and "compile on" in on.reason
    assert resolve_hardware(Hardware(profile="balanced"), H200, planned_unet_steps=planned).compile is False
    assert resolve_hardware(Hardware(compile="auto"), NO_GPU, planned_unet_steps=planned).compile is False


def test_memory_ladder_goes_cheapest_first_and_ends():
    hw = ResolvedHardware(profile="max-speed", device="cuda:0", dtype="float16", offload="none",
                          forward_chunking=False, decode_chunk_size=8, compile=True)
    changes = []
    while (lower := next_rung(hw)) is not None:
        changes.append(", ".join(f"{k}={v}" for k, v in lower.to_json().items() if v != hw.to_json()[k]))
        hw = lower
    assert changes == [
        "decode_chunk_size=2",
        "forward_chunking=True",
        "sequential_cfg=True",
        "decode_chunk_size=1",
        "offload=model, compile=False",  # the whole UNet on the GPU while it denoises
        "offload=group",  # streamed layer by layer
        "offload=sequential",
    ]


def test_memory_ladder_on_a_cpu_stops_before_offloading():
    hw = ResolvedHardware(profile="cpu", device="cpu", dtype="float32", offload="none", forward_chunking=True,
                          decode_chunk_size=1, compile=False, sequential_cfg=True)
    assert next_rung(hw) is None


def test_shape_groups_keep_first_appearance_order():
    jobs = [{"num_frames": 25, "height": h, "width": 1024, "num_inference_steps": 25, "n": i}
            for i, h in enumerate((576, 512, 576, 512, 576))]
    groups = shape_groups(jobs)
    assert [shape for shape, _ in groups] == [(25, 576, 1024), (25, 512, 1024)]
    assert [[j["n"] for j in group] for _, group in groups] == [[0, 2, 4], [1, 3]]


CACHE_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE",
                   "TRITON_CACHE_DIR")


def test_compile_cache_defaults_to_a_stable_folder_respects_the_user_and_is_put_back(monkeypatch):
    import os

    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/home/u/.cache")
    changes = ProcessChanges()
    assert configure_compile_cache(changes) == "/home/u/.cache/svdflow/inductor"
    assert (os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"], os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"]) == ("1", "1")
    assert os.environ["TRITON_CACHE_DIR"] == "/home/u/.cache/svdflow/inductor/triton"
    changes.restore()
    assert not any(name in os.environ for name in CACHE_VARIABLES)

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/fast/cache")
    monkeypatch.setenv("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
    changes = ProcessChanges()
    assert configure_compile_cache(changes) == "/fast/cache"
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "0"
    changes.restore()
    assert (os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"]) == ("/fast/cache", "0")


def test_sequential_cfg_gives_the_batched_result_and_switches_off(tiny_pipe):
    unet = tiny_pipe.unet
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 2, 8, 8, 8, generator=generator)
    context = torch.randn(2, 1, 32, generator=generator)
    added = torch.tensor([[6.0, 127.0, 0.02], [6.0, 127.0, 0.02]])
    t = torch.tensor(10.0)
    from diffusers.hooks import HookRegistry

    with torch.inference_mode():
        batched = unet(sample, t, encoder_hidden_states=context, added_time_ids=added, return_dict=False)[0]
        set_sequential_cfg(unet, True)
        set_sequential_cfg(unet, True)  # idempotent
        assert HookRegistry.check_if_exists_or_initialize(unet).get_hook(HOOK_NAME) is not None
        split = unet(sample, t, encoder_hidden_states=context, added_time_ids=added).sample
        split_tuple = unet(sample, t, encoder_hidden_states=context, added_time_ids=added, return_dict=False)[0]
        set_sequential_cfg(unet, False)
        set_sequential_cfg(unet, False)  # idempotent
        assert HookRegistry.check_if_exists_or_initialize(unet).get_hook(HOOK_NAME) is None
        again = unet(sample, t, encoder_hidden_states=context, added_time_ids=added, return_dict=False)[0]
    torch.testing.assert_close(split, batched, rtol=1e-4, atol=1e-5)
    assert torch.equal(split, split_tuple)
    assert torch.equal(again, batched)  # off again: the batched forward, as before


def test_forward_chunking_switches_on_and_off(tiny_pipe):
    chunked = [m for m in tiny_pipe.unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    set_forward_chunking(tiny_pipe.unet, True)
    assert chunked and all(m._chunk_size == 1 for m in chunked)
    set_forward_chunking(tiny_pipe.unet, False)
    assert all(m._chunk_size is None for m in chunked)


# --- the session: out-of-memory retries and the warm-compile marker ---------------------------------

MANIFEST = """
svdflow: 1
model: {source: "builtin:tiny"}
hardware: {profile: cpu}
defaults: {num_frames: 2, num_inference_steps: 2, width: 64, height: 64}
items:
  - {id: a, image: a.png}
"""


def fake_oom(monkeypatch, failures: int) -> list[int]:
    from svdflow.pipeline import render

    real, calls = render.render_frames, []

    def render_frames(pipe, image, params, **kwargs):
        calls.append(kwargs["decode_chunk_size"])
        if len(calls) <= failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pipe, image, params, **kwargs)

    monkeypatch.setattr(render, "render_frames", render_frames)
    return calls


def test_out_of_memory_retries_lower_and_records_what_it_took(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", 64, 64)
    spec = load_run_spec(write_manifest(tmp_path, MANIFEST))
    session = PipelineSession(spec, spec.jobs, facts=NO_GPU)
    calls = fake_oom(monkeypatch, failures=2)
    from PIL import Image

    frames = session.render(spec.jobs[0], Image.open(tmp_path / "a.png").convert("RGB"))

    assert frames.shape == (2, 64, 64, 3)
    assert calls == [None, 2, 2]
    retries = session.hardware_record("a").oom_retries
    assert [r.changed for r in retries] == ["decode_chunk_size=2", "forward_chunking=True"]
    assert retries[0].error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert retries[-1].succeeded_s is not None and retries[0].succeeded_s is None
    recorded = session.hardware_record("a").model_dump(mode="json", by_alias=True)["oom_retries"]
    assert "succeeded_s" in recorded[-1] and "succeeded_s" not in recorded[0]
    assert recorded[0]["from"]["decode_chunk_size"] is None and recorded[0]["to"]["decode_chunk_size"] == 2
    assert (session.hardware.decode_chunk_size, session.hardware.forward_chunking) == (2, True)
    # Switched in place, not by loading the model again.
    assert all(m._chunk_size == 1 for m in session.pipe.unet.modules() if hasattr(m, "set_chunk_feed_forward"))
    assert session.hardware_record("other").oom_retries == []


def test_out_of_memory_at_the_bottom_of_the_ladder_fails_the_job(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", 64, 64)
    spec = load_run_spec(write_manifest(tmp_path, MANIFEST))
    session = PipelineSession(spec, spec.jobs, facts=NO_GPU)
    fake_oom(monkeypatch, failures=99)
    with pytest.raises(RenderError, match="out of GPU memory even at the bottom of the memory ladder"):
        session.render(spec.jobs[0], None)
    assert [r.changed for r in session.oom_retries] == [
        "decode_chunk_size=2", "forward_chunking=True", "sequential_cfg=True", "decode_chunk_size=1"]


def test_a_warm_compile_marker_makes_auto_compile_worth_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    items = "\n".join(f"  - {{id: v{i}, image: a.png}}" for i in range(8))
    manifest = write_manifest(tmp_path, f"""
svdflow: 1
model: {{source: "builtin:tiny"}}
hardware: {{profile: max-speed}}
defaults: {{num_frames: 25, num_inference_steps: 25, width: 1024, height: 576}}
items:
{items}
""")
    spec = load_run_spec(manifest)
    cold = PipelineSession(spec, spec.jobs, facts=H200).resolve()
    assert cold.compile is False and "cold cache" in cold.reason  # 200 steps: < ~650

    marker = PipelineSession(spec, spec.jobs, facts=H200)._compile_marker(H200, (25, 576, 1024))
    marker.parent.mkdir(parents=True)
    marker.touch()
    warm = PipelineSession(spec, spec.jobs, facts=H200).resolve()
    assert warm.compile is True and "warm cache" in warm.reason


def test_auto_prints_its_choice(tmp_path):
    from svdflow.run.progress import Reporter

    class Notes(Reporter):
        def __init__(self):
            self.notes = []

        def note(self, text):
            self.notes.append(text)

    spec = load_run_spec(write_manifest(tmp_path, MANIFEST.replace("hardware: {profile: cpu}", "hardware: {}")))
    reporter = Notes()
    PipelineSession(spec, spec.jobs, reporter.note, facts=SMALL_GPU).resolve()
    assert reporter.notes == ["hardware: profile low-vram, compile off (8.0 GiB free on cuda:0 (< 16))"]


# --- regional compilation as hooks, and what a run leaves behind in the process ----------------------


def eager_compile(monkeypatch):
    """torch.compile with dynamo's eager backend: the real tracing and hooks, no inductor build."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **options: real(fn, **{**options, "backend": "eager"}))


def process_settings() -> dict:
    import os

    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    return {"env": {name: os.environ.get(name) for name in CACHE_VARIABLES},
            "recompile_limit": getattr(dynamo_config, limit),
            "conv_1x1_as_mm": inductor_config.conv_1x1_as_mm,
            "matmul": torch.get_float32_matmul_precision(), "threads": torch.get_num_threads()}


def test_regional_compile_hooks_go_on_each_repeated_block_and_come_off(tiny_pipe, monkeypatch):
    from diffusers.hooks import HookRegistry

    from svdflow.pipeline.hooks import regional_compile

    eager_compile(monkeypatch)
    blocks = regional_compile.compiled_blocks(tiny_pipe.unet)
    assert blocks and {type(b).__name__ for b in blocks} == set(regional_compile.REGIONAL_COMPILE_BLOCKS)
    assert regional_compile.apply_regional_compile(tiny_pipe.unet, dynamic=False) == len(blocks)
    assert regional_compile.apply_regional_compile(tiny_pipe.unet, dynamic=False) == len(blocks)  # idempotent
    hooks = [HookRegistry.check_if_exists_or_initialize(b).get_hook(regional_compile.HOOK_NAME) for b in blocks]
    assert all(hook is not None for hook in hooks)
    regional_compile.remove_regional_compile(tiny_pipe.unet)
    assert all(HookRegistry.check_if_exists_or_initialize(b).get_hook(regional_compile.HOOK_NAME) is None
               for b in blocks)


@pytest.mark.slow
def test_a_compiled_run_and_its_rerender_put_every_process_wide_setting_back(tmp_path, monkeypatch):
    from svdflow.api import rerender, run_manifest

    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    eager_compile(monkeypatch)
    write_image(tmp_path / "a.png", 64, 64)
    plain = write_manifest(tmp_path, MANIFEST.replace("defaults:", "output: {dir: plain, formats: [frames]}\n"
                                                                   "defaults:"), "plain.yaml")
    compiled = write_manifest(tmp_path, MANIFEST.replace("{profile: cpu}", "{profile: cpu, compile: 'on'}").replace(
        "defaults:", "output: {dir: compiled, formats: [frames]}\ndefaults:"), "compiled.yaml")
    # Two threads: not the tests' one (conftest.one_thread) nor the renders' (SVDFLOW_CPU_THREADS), so
    # that a count left behind shows.
    with torch_threads(2):
        before = process_settings()
        assert before["threads"] == 2
        assert run_manifest(plain).statuses == {"a": "done"}
        assert run_manifest(compiled).statuses == {"a": "done"}
        assert process_settings() == before
        assert rerender(str(tmp_path / "compiled"), "a", write=False).matches
        assert process_settings() == before

    [entry] = recorded(tmp_path / "compiled").values()
    [plain_entry] = recorded(tmp_path / "plain").values()
    assert entry["hardware"]["compile"] is True
    assert entry["frames_sha256"] == plain_entry["frames_sha256"]  # dynamo traced the same operations
