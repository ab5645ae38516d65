"""The bench's human summary: one row per case, then the attention probe, the peaks by phase, the
overlapped decodes, and what the deviation column means."""

from __future__ import annotations

from typing import Any

HEADER = ("case", "s/video", "vs seed", "UNet step s", "decode s", "compile s", "peak GiB", "latents rel L2",
          "PSNR dB", "note")


def format_table(result: dict[str, Any]) -> str:
    cases = result["cases"]
    seed = cases.get("seed-offload") if _ok(cases.get("seed-offload")) else None
    rows = [HEADER]
    for name, case in cases.items():
        if not _ok(case):
            rows.append((name, *("-" * 8), f"{case.get('status')}: {(case.get('reason') or case.get('error') or '')[:70]}"))
            continue
        if name == "compile-start":
            rows.append((name, "-", "-", _fmt(case.get("unet_step_s"), ".4f"), "-", _fmt(case.get("compile_start_s")),
                         "-", "-", "-", f"{'warm' if case['cache']['warm'] else 'cold'} cache; first step "
                                        f"{case['first_step_s']} s"))
            continue
        s_per_video = case.get("s_per_video")
        speedup = f"{seed['s_per_video'] / s_per_video:.2f}x" if seed and s_per_video else "-"
        latents = case.get("latents") or {}
        rel = _fmt(latents.get("rel_l2"), ".1e") if "rel_l2" in latents else "-"
        if "ok" in latents:
            rel += " ok" if latents["ok"] else " FAIL"
        db = "same" if case.get("frames_identical") else _fmt(case.get("frames_psnr_db"), ".1f")
        peak = _fmt(case.get("peak_gib")) if case.get("peak_gib") is not None else \
            f"rss {case['max_rss_gib']}" if case.get("max_rss_gib") is not None else "-"
        note = "; ".join(case.get("notes", []))[:60]
        rows.append((name, _fmt(s_per_video), speedup, _fmt(case.get("unet_step_s"), ".4f"),
                     _fmt(case.get("post_loop_s")), _fmt(case.get("compile_s")), peak, rel, db, note))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    config = result["config"]
    lines.insert(0, f"svdflow bench: {config['variant']} {config['num_frames']}x{config['height']}x{config['width']}, "
                    f"{config['steps']} steps, {config['dtype']} on {result['environment'].get('gpu') or config['device']}")
    probe = (cases.get("balanced") or {}).get("attention_probe")
    if probe:
        timings = ", ".join(f"{k} {v * 1000:.1f} ms" if v is not None else f"{k} n/a"
                            for k, v in probe["seconds"].items())
        chosen = probe["chosen"] or "torch's choice"
        lines.append(f"attention kernels on the outermost shapes: {timings} -> {chosen} first")
    phases = [f"{name} " + "/".join(_fmt(case["phase_peak_gib"][k]) for k in ("pre_loop", "loop", "post_loop"))
              for name, case in cases.items() if case.get("phase_peak_gib")]
    if phases:
        lines.append("peak GiB before the loop/in it/decoding: " + "; ".join(phases))
    for name in ("balanced", "max-speed"):
        overlap = (cases.get(name) or {}).get("overlap") or {}
        if "s_per_video" in overlap:
            lines.append(f"{name} with overlap_decode: {overlap['s_per_video']} s/video (plain "
                         f"{overlap['plain_s_per_video']}, saves {overlap['saved_s_per_video']}), peak "
                         f"{_fmt(overlap['peak_gib'])} GiB, frames identical: {overlap['frames_identical']}")
        elif "error" in overlap:
            lines.append(f"{name} with overlap_decode: failed: {overlap['error'][:200]}")
    lines.append("latents rel L2 / PSNR: against balanced (same seed and image). The weights are random: a "
                 "deviation is a numerical check, not a quality claim; fp8, draft and decode-one-chunk are lossy "
                 "by design and not judged.")
    return "\n".join(lines)


def _ok(case: dict[str, Any] | None) -> bool:
    return bool(case) and case.get("status") == "ok"


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)
