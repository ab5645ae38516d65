"""`svdflow bench` on a CPU: builtin:tiny at a tiny size, every case that can run here, table + JSON."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from svdflow.bench import format_table, merge_results


@pytest.mark.slow
def test_tiny_bench_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench" / "result.json"

    code, out, _ = run_cli(capsys, "bench", "--variant", "tiny", "--frames", "2", "--steps", "2", "--kernels",
                           "--json", str(path))

    assert code == 0
    result = json.loads(path.read_text())
    cases = result["cases"]
    assert list(cases) == ["balanced", "max-speed", "low-vram", "seed-offload", "seed-offload-lowmem"]
    for name in ("balanced", "max-speed", "low-vram"):
        case = cases[name]
        assert case["status"] == "ok", case
        assert case["settings"]["profile"] == name
        assert len(case["videos_s"]) == 2 and case["s_per_video"] > 0 and case["unet_step_s"] > 0
        assert case["peak_gib"] is None and case["max_rss_gib"] > 0  # no per-case peak counter on a CPU
        # The steady video split into before the loop, the loop and after it, which add up to it.
        parts = case["pre_loop_s"] + case["loop_s"] + case["post_loop_s"]
        assert min(case["pre_loop_s"], case["loop_s"], case["post_loop_s"]) > 0
        assert 0.7 * case["videos_s"][1] < parts <= case["videos_s"][1] + 0.002
        assert name in out
    # Same seed, same image: eager against itself, and the profiles against eager.
    assert cases["balanced"]["latents_repeat"]["rel_l2"] == 0.0
    assert cases["max-speed"]["latents"]["ok"] and cases["max-speed"]["latents"]["rel_l2"] == 0.0
    assert cases["low-vram"]["latents"]["ok"] and cases["low-vram"]["latents"]["rel_l2"] < 1e-4
    # --kernels: where the time goes, for the denoising steps and, apart, the VAE decode.
    for part in ("denoise", "decode"):
        breakdown = cases["balanced"]["kernels"][part]
        assert breakdown["total_s"] > 0 and abs(sum(breakdown["by_kind"].values()) - 1) < 0.01, breakdown
        assert breakdown["top"][0]["share"] > 0
    assert "conv" in cases["balanced"]["kernels"]["decode"]["by_kind"]
    assert "kernels" not in cases["low-vram"]
    # Three videos as a run with overlap_decode renders them: the same bytes as a plain decode.
    for name in ("balanced", "max-speed"):
        overlap = cases[name]["overlap"]
        assert overlap["videos"] == 3 and overlap["frames_identical"] is True, overlap
        assert 0 < overlap["s_per_video"] < overlap["total_s"]
        assert overlap["saved_s_per_video"] == pytest.approx(overlap["plain_s_per_video"] - overlap["s_per_video"],
                                                             abs=0.002)
        assert f"{name} with overlap_decode: {overlap['s_per_video']} s/video" in out
    assert cases["low-vram"]["settings"]["sequential_cfg"] is True
    assert "compile skipped on a CPU" in cases["max-speed"]["notes"][0]
    for name in ("seed-offload", "seed-offload-lowmem"):
        assert cases[name]["status"] == "skipped" and "accelerator" in cases[name]["reason"]
    assert result["config"]["variant"] == "tiny" and result["config"]["device"] == "cpu"
    assert result["tolerance"]["latents_rel_l2"] == 1e-2
    assert result["targets"] and not any(t["applies"] for t in result["targets"])
    assert out.splitlines()[0] == "svdflow bench: tiny 2x64x64, 2 steps, float32 on cpu"


def test_unknown_case_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "bench", "--variant", "tiny", "--cases", "balanced,turbo")
    assert code == 2
    assert err.strip() == (
        "error: unknown bench case turbo; choose from balanced, max-speed, low-vram, seed-offload, "
        "seed-offload-lowmem, compile-start, low-vram-batched-cfg, max-speed-fullgraph")


def gpu_result() -> dict:
    """The shape of a full-size GPU run, as gpu_bench.sh merges it (numbers made up)."""
    def case(s, step, peak, **extra):
        return {"status": "ok", "s_per_video": s, "unet_step_s": step, "peak_gib": peak, **extra}

    return {
        "config": {"variant": "xt", "device": "cuda:0", "dtype": "float16", "num_frames": 25, "height": 576,
                   "width": 1024, "steps": 25},
        "environment": {"gpu": "NVIDIA H200"},
        "cases": {
            "balanced": case(18.0, 0.63, 14.0),
            "max-speed": case(7.9, 0.27, 15.0, compile_s=100.0, latents={"rel_l2": 2e-3, "ok": True}),
            "low-vram": case(24.0, 0.85, 5.5, latents={"rel_l2": 1e-3, "ok": True}),
            "seed-offload": case(20.6, 0.63, 11.0),
        },
        "targets": [],
    }


def test_merged_gpu_results_check_every_target():
    warm = {"cases": {"compile-start": {"status": "ok", "cache": {"warm": True}, "first_step_s": 12.0,
                                        "unet_step_s": 0.27, "compile_start_s": 11.7}}}
    merged = merge_results(gpu_result(), warm)
    verdicts = {t["target"]: (t["value"], t["met"]) for t in merged["targets"]}
    assert verdicts == {
        "max-speed <= 8.0 s/video": (7.9, True),
        "max-speed >= 2.5x faster than seed-offload": (2.61, True),
        "max-speed final latents within rel L2 0.01 of eager fp16": (2e-3, True),
        "low-vram final latents within rel L2 0.01 of eager fp16": (1e-3, True),
        "low-vram peak <= 6.0 GiB": (5.5, True),
        "low-vram <= 1.3x balanced's time": (1.33, False),
        "warm-cache compile start <= 20.0 s": (11.7, True),
    }
    assert all(t["applies"] for t in merged["targets"])
    table = format_table(merged)
    assert "svdflow bench: xt 25x576x1024, 25 steps, float16 on NVIDIA H200" in table
    assert "target: low-vram <= 1.3x balanced's time: 1.33 -> NOT met" in table
    assert "warm cache; first step 12.0 s" in table


def test_low_vram_peak_counts_the_first_video_too():
    result = gpu_result()
    result["cases"]["low-vram"]["first_video_peak_gib"] = 6.2  # e.g. a one-off workspace on the first video
    verdicts = {t["target"]: (t["value"], t["met"]) for t in merge_results(result)["targets"]}
    assert verdicts["low-vram peak <= 6.0 GiB"] == (6.2, False)


class _FakeCudaEvent:
    def __init__(self, enable_timing: bool = False):
        self.at = None

    def record(self, stream=None):
        import time

        self.at = time.perf_counter()

    def elapsed_time(self, other) -> float:
        return (other.at - self.at) * 1000


def test_measure_splits_each_videos_peak_memory_by_phase(monkeypatch):
    """_measure's CUDA bookkeeping on the CPU: torch.cuda's events and memory counters faked. The
    fake peak is the number of resets so far, so each phase's peak says which mark read it."""
    import torch

    from svdflow.bench import cases as bench

    resets = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeCudaEvent)
    for name in ("synchronize", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: resets.append(1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: len(resets) * bench.GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a, **k: 2 * len(resets) * bench.GIB)
    config = bench._config("tiny", "cpu", 2, 2, 2, None, None, False, False, None)
    state = bench._State(config)
    state.cuda = True
    pipe = state.pipeline("cpu")

    out = bench._measure(state, pipe, None, videos=2)

    # Per video: a reset, then marks at the start, the loop's start, each of 2 steps and the end,
    # each reading the peak and resetting it. The second video starts after 6 + 1 resets.
    assert out["phase_peak_gib"] == {"pre_loop": 8.0, "loop": 10.0, "post_loop": 11.0}
    assert (out["peak_gib"], out["reserved_gib"], out["first_video_peak_gib"]) == (11.0, 22.0, 5.0)
