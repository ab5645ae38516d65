"""`svdflow bench` on a CPU: builtin:tiny at a tiny size, every case that can run here, table + JSON."""

from __future__ import annotations

import json

import pytest
from conftest import benchmark_script, run_cli

from svdflow.bench import format_table, merge_results

# On one thread: at these sizes OpenMP's threads only wait on each other, and beside `make test`'s other
# worker they spun the tiny bench to twice the CPU time. Every case runs on the same count, so the cases'
# comparisons (identical latents and frames) do not depend on it.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_tiny_bench_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench" / "result.json"

    code, out, _ = run_cli(capsys, "bench", "--variant", "tiny", "--frames", "2", "--steps", "2", "--kernels",
                           "--overlap", "--json", str(path))

    assert code == 0
    result = json.loads(path.read_text())
    cases = result["cases"]
    assert list(cases) == ["balanced", "max-speed", "eager-vae", "draft", "fp8", "low-vram", "no-shortcut",
                           "default-attention", "decode-one-chunk", "seed-offload"]
    for name in ("balanced", "max-speed", "eager-vae", "draft", "fp8", "low-vram", "no-shortcut", "default-attention"):
        case = cases[name]
        assert case["status"] == "ok", case
        assert case["s_per_video"] > 0 and case["unet_step_s"] > 0, name
        assert case["peak_gib"] is None and case["max_rss_gib"] > 0  # no per-case peak counter on a CPU
        # The steady video split into before the loop, the loop and after it, which add up to it.
        parts = case["pre_loop_s"] + case["loop_s"] + case["post_loop_s"]
        assert min(case["pre_loop_s"], case["loop_s"], case["post_loop_s"]) > 0
        assert 0.7 * case["s_per_video"] < parts <= case["s_per_video"] + 0.002, name
        assert name in out
    assert cases["balanced"]["settings"]["profile"] == "balanced" and len(cases["balanced"]["videos_s"]) == 2
    assert cases["low-vram"]["settings"]["profile"] == "low-vram"
    assert cases["low-vram"]["settings"]["sequential_cfg"] is True
    # Same seed, same image: eager against itself, and every lossless case against eager.
    assert cases["balanced"]["latents_repeat"]["rel_l2"] == 0.0
    for name in ("max-speed", "eager-vae", "no-shortcut", "default-attention"):
        assert cases[name]["latents"] == {**cases[name]["latents"], "rel_l2": 0.0, "ok": True}, name
        assert cases[name]["frames_identical"] is True, name
    assert cases["low-vram"]["latents"]["ok"] and cases["low-vram"]["latents"]["rel_l2"] < 1e-4
    # The lossy cases are measured against balanced, not judged; their frames differ.
    for name in ("draft", "fp8"):
        assert "ok" not in cases[name]["latents"] and cases[name]["latents"]["rel_l2"] > 0
        assert cases[name]["frames_identical"] is False and cases[name]["frames_psnr_db"] > 0
    assert cases["draft"]["settings"]["cfg_until"] == 0.5 and cases["draft"]["settings"]["cache_interval"] == 3
    assert cases["fp8"]["settings"]["fp8"] is True
    assert cases["no-shortcut"]["settings"]["bench_setup"]["shortcut"] is False
    assert cases["default-attention"]["settings"]["attention_backend"] is None
    # The attention probe ran on the CPU's two kernels; its choice went first in every lossless case.
    probe = cases["balanced"]["attention_probe"]
    assert set(probe["seconds"]) == {"flash", "math"} and probe["chosen"] in ("flash", "math")
    assert cases["balanced"]["settings"]["attention_backend"] == probe["chosen"]
    assert f"-> {probe['chosen']} first" in out
    # max-speed ran the compile path (dynamo's eager backend on a CPU): the first of its videos traced.
    assert len(cases["max-speed"]["videos_s"]) == 2 and cases["max-speed"]["compile_s"] is not None
    assert cases["max-speed"]["settings"]["compile"] is True and "eager backend" in cases["max-speed"]["notes"][0]
    # Decoding balanced's 2 frames in one chunk or in chunks of 8 is the same chunk here.
    assert cases["decode-one-chunk"]["one_chunk"]["frames_identical"] is True
    # --kernels: where the time goes, for the denoising steps and, apart, the VAE decode.
    for part in ("denoise", "decode"):
        breakdown = cases["balanced"]["kernels"][part]
        assert breakdown["total_s"] > 0 and abs(sum(breakdown["by_kind"].values()) - 1) < 0.01, breakdown
        assert breakdown["top"][0]["share"] > 0
    assert "conv" in cases["balanced"]["kernels"]["decode"]["by_kind"]
    assert "kernels" not in cases["low-vram"]
    # --overlap: three videos as a run with overlap_decode renders them: the same bytes as a plain decode.
    for name in ("balanced", "max-speed"):
        overlap = cases[name]["overlap"]
        assert overlap["videos"] == 3 and overlap["frames_identical"] is True, overlap
        assert 0 < overlap["s_per_video"] < overlap["total_s"]
        assert overlap["saved_s_per_video"] == pytest.approx(overlap["plain_s_per_video"] - overlap["s_per_video"],
                                                             abs=0.002)
        assert f"{name} with overlap_decode: {overlap['s_per_video']} s/video" in out
    assert cases["seed-offload"]["status"] == "skipped" and "accelerator" in cases["seed-offload"]["reason"]
    assert result["config"]["variant"] == "tiny" and result["config"]["device"] == "cpu"
    assert result["tolerance"]["latents_rel_l2"] == 1e-2 and "not a quality claim" in result["deviation"]
    assert "targets" not in result  # measurements only: the targets are benchmarks/gpu_targets.py's
    lines = out.splitlines()
    assert lines[0] == "svdflow bench: tiny 2x64x64, 2 steps, float32 on cpu"
    assert "not a quality claim" in lines[-1]


def test_unknown_case_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "bench", "--variant", "tiny", "--cases", "balanced,turbo")
    assert code == 2
    assert err.strip() == (
        "error: unknown bench case turbo; choose from balanced, max-speed, eager-vae, draft, fp8, low-vram, "
        "no-shortcut, default-attention, decode-one-chunk, seed-offload, compile-start, max-autotune, "
        "coordinate-descent, seed-offload-lowmem, low-vram-batched-cfg, max-speed-fullgraph")


def _gpu_targets():
    """benchmarks/gpu_targets.py, a script, loaded as a module."""
    return benchmark_script("gpu_targets")


def gpu_result() -> dict:
    """The shape of a full-size GPU run, as gpu_bench.sh writes it (numbers made up)."""
    def case(s, step, peak, **extra):
        return {"status": "ok", "s_per_video": s, "unet_step_s": step, "peak_gib": peak, "post_loop_s": 2.0, **extra}

    return {
        "config": {"variant": "xt", "device": "cuda:0", "dtype": "float16", "num_frames": 25, "height": 576,
                   "width": 1024, "steps": 25},
        "environment": {"gpu": "NVIDIA H200"},
        "cases": {
            "balanced": case(18.0, 0.63, 14.0, attention_probe={"seconds": {"cudnn": 0.012, "flash": 0.014,
                                                                            "efficient": None}, "chosen": "cudnn"}),
            "max-speed": case(7.9, 0.27, 15.0, compile_s=100.0, latents={"rel_l2": 2e-3, "ok": True},
                              frames_identical=False, frames_psnr_db=48.3),
            "eager-vae": case(8.6, 0.27, 15.0, latents={"rel_l2": 2e-3, "ok": True}),
            "draft": case(3.9, 0.2, 15.0, latents={"rel_l2": 0.2}, frames_psnr_db=24.1),
            "fp8": case(6.6, 0.22, 14.0, latents={"rel_l2": 0.03}, frames_psnr_db=38.0),
            "low-vram": case(24.0, 0.85, 5.5, latents={"rel_l2": 1e-3, "ok": True}),
            "no-shortcut": case(18.5, 0.65, 14.0, latents={"rel_l2": 0.0, "ok": True}, frames_identical=True),
            "default-attention": case(18.2, 0.64, 14.0, latents={"rel_l2": 1e-4, "ok": True}),
            "decode-one-chunk": {"status": "ok", "post_loop_s": 1.5, "peak_gib": 30.0,
                                 "chunks_of_8": {"decode_s": 2.0, "peak_gib": 13.0},
                                 "one_chunk": {"decode_s": 1.5, "peak_gib": 30.0}},
            "seed-offload": case(20.6, 0.63, 11.0),
        },
    }


def test_merged_gpu_results_check_every_target():
    gpu_targets = _gpu_targets()
    warm = {"cases": {"compile-start": {"status": "ok", "cache": {"warm": True}, "first_step_s": 12.0,
                                        "unet_step_s": 0.27, "compile_start_s": 11.7}}}
    merged = merge_results(gpu_result(), warm)
    verdicts = {t["target"]: (t["value"], t["met"]) for t in gpu_targets.targets(merged)}
    assert verdicts == {
        "max-speed <= 8.0 s/video": (7.9, True),
        "max-speed final latents within rel L2 0.01 of eager fp16": (2e-3, True),
        "max-speed >= 2.5x faster than seed-offload": (2.61, True),
        "fp8 <= 6.5 s/video": (6.6, False),
        "draft <= 4.0 s/video": (3.9, True),
        "low-vram peak <= 6.0 GiB": (5.5, True),
        "low-vram <= 1.3x balanced's time": (1.33, False),
        "warm-cache compile start <= 10.0 s": (11.7, False),
    }
    assert all(t["applies"] for t in gpu_targets.targets(merged))
    report = gpu_targets.format_targets(merged)
    assert "  one-token cross-attention shortcut: +0.500 s (eager, both with the probed kernel)" in report
    assert "  compiled VAE decoder: +0.700 s (compiled UNet in both)" in report
    assert "  decode in one chunk (changes pixels; opt-in): +0.500 s (decode only; peak 30.0 GiB against 13.0)" in report
    assert "target: low-vram <= 1.3x balanced's time: 1.33 -> NOT met" in report
    # The bench's own table has measurements only.
    table = format_table(merged)
    assert "svdflow bench: xt 25x576x1024, 25 steps, float16 on NVIDIA H200" in table
    assert "target" not in table and "warm cache; first step 12.0 s" in table
    assert "attention kernels on the outermost shapes: cudnn 12.0 ms, flash 14.0 ms, efficient n/a -> cudnn first" in table
    row = next(line for line in table.splitlines() if line.startswith("max-speed "))
    assert row.split()[:10] == ["max-speed", "7.90", "2.61x", "0.2700", "2.00", "100.00", "15.00", "2.0e-03", "ok",
                                "48.3"]


def test_low_vram_peak_counts_the_first_video_too():
    result = gpu_result()
    result["cases"]["low-vram"]["first_video_peak_gib"] = 6.2  # e.g. a one-off workspace on the first video
    verdicts = {t["target"]: (t["value"], t["met"]) for t in _gpu_targets().targets(result)}
    assert verdicts["low-vram peak <= 6.0 GiB"] == (6.2, False)


def test_gpu_targets_reads_the_json_files_of_a_run(tmp_path, capsys):
    (tmp_path / "bench.json").write_text(json.dumps(gpu_result()))
    assert _gpu_targets().main([str(tmp_path / "bench.json"), str(tmp_path / "compile_warm.json"),
                                "--json", str(tmp_path / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "what each change buys (s/video saved; negative: it costs):"
    assert "target: max-speed <= 8.0 s/video: 7.9 -> met" in out
    assert json.loads((tmp_path / "summary.json").read_text())["targets"][0]["target"] == "max-speed <= 8.0 s/video"


class _FakeCudaEvent:
    def __init__(self, enable_timing: bool = False):
        self.at = None

    def record(self, stream=None):
        import time

        self.at = time.perf_counter()

    def elapsed_time(self, other) -> float:
        return (other.at - self.at) * 1000


def test_measure_splits_each_videos_peak_memory_by_phase(monkeypatch):
    """measure()'s CUDA bookkeeping on the CPU: torch.cuda's events and memory counters faked. The
    fake peak is the number of resets so far, so each phase's peak says which mark read it."""
    import torch

    from svdflow.bench import clock

    resets = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeCudaEvent)
    for name in ("synchronize", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: resets.append(1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: len(resets) * clock.GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a, **k: 2 * len(resets) * clock.GIB)
    from dataclasses import asdict

    from svdflow.bench.config import BenchConfig, bench_config
    from svdflow.bench.state import BenchState

    class CudaBookkeeping(BenchConfig):
        """A CPU pipeline measured as if it ran on CUDA."""

        @property
        def cuda(self) -> bool:
            return True

    config = bench_config("tiny", "cpu", 2, 2, 2, None, None)
    state = BenchState(config)
    pipe = state.fresh("cpu")

    out = clock.measure(CudaBookkeeping(**asdict(config)), pipe, state.image, None, videos=2)

    # Per video: a reset, then marks at the start, the loop's start, each of 2 steps and the end,
    # each reading the peak and resetting it. The second video starts after 6 + 1 resets.
    assert out["phase_peak_gib"] == {"pre_loop": 8.0, "loop": 10.0, "post_loop": 11.0}
    assert (out["peak_gib"], out["reserved_gib"], out["first_video_peak_gib"]) == (11.0, 22.0, 5.0)
