"""Running the chosen cases in one process: each case's outcome kept whatever the others do, the JSON
rewritten after every case (a run cut short keeps what it measured), and results of several
processes merged (the warm compile start needs a process of its own)."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from svdflow.bench.config import LATENT_REL_L2_TOL, bench_config, chosen_cases, environment

BENCH_FORMAT = 2  # 2: issue 17's cases, deviation from balanced, no targets (those are benchmarks/')


def run_bench(variant: str | None = None, profiles: Sequence[str] | None = None, videos: int | None = None,
              steps: int | None = None, frames: int | None = None, height: int | None = None,
              width: int | None = None, device: str = "auto", check_latents: bool = True,
              json_path: str | os.PathLike[str] | None = None, kernels: bool = False, overlap: bool = False,
              deadline_s: float | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the cases in `profiles` (default: svdflow.bench.config.CASE_ORDER) and return the results.

    `variant`: "xt", "svd" or "tiny" (default: xt on CUDA, tiny elsewhere). `deadline_s` skips the cases
    that would start after that many seconds. `kernels` adds to balanced and max-speed where the time of
    a 2-step call and of one VAE decode goes; `overlap` adds three videos with overlap_decode to them.
    """
    from svdflow.bench.cases import CASES
    from svdflow.bench.state import BenchState

    log = log or (lambda _text: None)
    started = time.perf_counter()
    config = bench_config(variant, device, videos, steps, frames, height, width, check_latents, kernels,
                          deadline_s, overlap)
    cases = chosen_cases(profiles)
    result: dict[str, Any] = {
        "svdflow_bench": BENCH_FORMAT,
        "config": asdict(config),
        "environment": environment(config.device),
        "tolerance": {"latents_rel_l2": LATENT_REL_L2_TOL,
                      "why": "fp16 re-association ~1e-3 relative per step, accumulated over the steps; "
                             "real errors (wrong CFG branch, missing term) are O(1)"},
        "deviation": "from balanced, same seed and image; the weights are random, so a deviation is a "
                     "numerical check, not a quality claim",
        "cases": {},
    }
    log(f"bench: {config.variant} {config.num_frames}x{config.height}x{config.width}, {config.steps} steps, "
        f"{config.dtype} on {config.device}; cases: {', '.join(cases)}")
    state = BenchState(config)
    try:
        for name in cases:
            elapsed = time.perf_counter() - started
            if config.deadline_s is not None and elapsed > config.deadline_s:
                outcome = {"status": "skipped", "reason": f"deadline: {elapsed:.0f} s > {config.deadline_s:.0f} s"}
            else:
                log(f"bench: {name} ...")
                began = time.perf_counter()
                try:
                    outcome = CASES[name](state)
                except Exception as exc:  # one failing case must not lose the others
                    outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                               "traceback": traceback.format_exc()[-4000:]}
                    state.discard()
                outcome["case_s"] = round(time.perf_counter() - began, 2)
            result["cases"][name] = outcome
            result["elapsed_s"] = round(time.perf_counter() - started, 2)
            write_json(json_path, result)
            log(f"bench: {name}: {summary(outcome)}")
    finally:
        state.discard()  # frees the GPU's cached memory too
        state.changes.restore()
    return result


def merge_results(first: dict[str, Any], *others: dict[str, Any]) -> dict[str, Any]:
    """One result from several processes' (e.g. the warm compile-start run): their cases together."""
    merged = json.loads(json.dumps(first, default=str))
    for other in others:
        merged["cases"].update(other.get("cases", {}))
    return merged


def summary(case: dict[str, Any]) -> str:
    """One line per case for the log."""
    if case.get("status") != "ok":
        return f"{case.get('status')}: {case.get('reason') or case.get('error')}"
    if "s_per_video" not in case:
        if "compile_start_s" in case:
            return f"first step {case.get('first_step_s')} s, compile start {case.get('compile_start_s')} s"
        return f"decode {case.get('post_loop_s')} s, peak {case.get('peak_gib')} GiB"
    return f"{case['s_per_video']} s/video, step {case['unet_step_s']} s, peak {case.get('peak_gib')} GiB"


def write_json(path: str | os.PathLike[str] | None, result: dict[str, Any]) -> None:
    from svdflow.outputs.atomic import atomic_write_bytes

    if path is None:
        return
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, (json.dumps(result, indent=2, default=str) + "\n").encode())
