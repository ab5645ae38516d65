"""Quality scores on synthetic clips whose truth is known, and the qc rules on hand-made scores.

Clips are 1024x576 (SVD-XT's size, where the reference pixels of motion are the clip's own) made from
a seeded multi-scale texture kept within 40-215, so that a +/-12 change never clips.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from svdflow.quality.fidelity import PSNR_CAP_DB, psnr
from svdflow.quality.ranking import Variant, rank_sums, rank_variants
from svdflow.quality.rerolls import Attempt, kept_attempt, reroll_seed, reroll_seeds
from svdflow.quality.score import score_clip
from svdflow.quality.scores import QualityScores
from svdflow.quality.thresholds import QcThresholds
from svdflow.quality.verdict import ThresholdFailure, Verdict, judge

WIDTH, HEIGHT = 1024, 576
FPS = 7.0


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth noise at four scales (64, 16, 4, 1 px): structure for flow to follow at every size."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 1.0), (16, 0.6), (4, 0.4), (1, 0.2)):
        noise = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        image += weight * cv2.resize(noise, (width + 2 * cell, height + 2 * cell),
                                     interpolation=cv2.INTER_CUBIC)[cell:cell + height, cell:cell + width]
    image = (image - image.min()) / (image.max() - image.min())
    return (40 + 175 * image).round().astype(np.uint8)


def still(frames: int, seed: int = 0) -> np.ndarray:
    return np.repeat(texture(WIDTH, HEIGHT, seed)[None], frames, axis=0)


def pan(step: int, frames: int = 25, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A camera moving `step` px per frame across a wider texture: new content enters at one side."""
    wide = texture(width + step * frames, height)
    return np.ascontiguousarray(np.stack([wide[:, step * t: step * t + width] for t in range(frames)]))


@pytest.fixture(scope="module")
def static_scores() -> QualityScores:
    frames = still(14)
    return score_clip(frames, frames[0].copy(), fps=FPS)


def test_a_still_clip_has_no_motion_no_flicker_and_matches_its_input(static_scores):
    assert static_scores.frames == 14
    assert static_scores.analysis_size == (256, 144)
    motion = static_scores.motion
    assert motion.mean < 0.05 and motion.peak < 0.05
    assert (motion.dynamic, motion.dynamic_pairs, motion.dynamic_pairs_needed) == (False, 0, 4)
    assert static_scores.flicker.model_dump() == {"vbench": 1.0, "residual": 0.0, "brightness_jump": 0.0}
    assert static_scores.fidelity.model_dump() == {"first_ssim": 1.0, "last_ssim": 1.0, "first_psnr": 100.0,
                                                   "last_psnr": 100.0}
    exposure = static_scores.exposure
    assert (exposure.dark_frames, exposure.blown_frames) == (0, 0)
    assert exposure.min_sharpness == exposure.input_sharpness > 0


@pytest.mark.parametrize("step", [2, 4, 8])
def test_a_pan_reads_its_step_within_ten_percent(step):
    frames = pan(step)
    scores = score_clip(frames, frames[0].copy(), fps=FPS)
    assert scores.motion.mean == pytest.approx(step, rel=0.10)
    # VBench's threshold at 1024x576, 7 fps: 6 x 576/256 x 8/7 = 15.43 px a frame; a slow pan is static.
    assert scores.motion.dynamic_threshold == pytest.approx(15.4286)
    assert not scores.motion.dynamic
    # Flow explains the change: what is left after compensation is a fraction of the raw difference.
    raw_difference = 255 * (1 - scores.flicker.vbench)
    assert scores.flicker.residual < 0.5 * raw_difference
    assert scores.fidelity.first_ssim == 1.0
    assert scores.flicker.brightness_jump < 0.5


def test_motion_is_in_pixels_of_a_frame_scaled_to_1024_wide():
    frames = pan(4, frames=14, width=512, height=288)
    scores = score_clip(frames, frames[0].copy(), fps=FPS)
    assert scores.analysis_size == (256, 144)
    assert scores.motion.mean == pytest.approx(8, rel=0.10)
    assert scores.motion.dynamic_threshold == pytest.approx(15.4286)


def test_a_fast_pan_is_dynamic_by_vbench_rule():
    frames = pan(24, frames=14)
    scores = score_clip(frames, frames[0].copy(), fps=FPS)
    assert scores.motion.mean == pytest.approx(24, rel=0.10)
    assert scores.motion.peak > scores.motion.dynamic_threshold
    assert (scores.motion.dynamic, scores.motion.dynamic_pairs, scores.motion.dynamic_pairs_needed) == (True, 13, 4)


def test_brightness_flicker_of_12_is_read_by_all_three_figures():
    base = texture(WIDTH, HEIGHT).astype(np.int16)
    frames = np.stack([base + (12 if t % 2 else -12) for t in range(14)]).astype(np.uint8)
    scores = score_clip(frames, base.astype(np.uint8), fps=FPS)
    # Every pixel changes by exactly 24 between consecutive frames.
    assert scores.flicker.vbench == pytest.approx((255 - 24) / 255, abs=1e-4)
    assert scores.flicker.residual == pytest.approx(24, abs=1.0)
    assert scores.flicker.brightness_jump == pytest.approx(24, abs=0.5)
    assert scores.motion.mean < 0.5
    assert not scores.motion.dynamic


def test_a_black_tail_and_blown_frames_are_counted():
    frames = still(14)
    frames[5:7] = 255
    frames[-4:] = 0
    scores = score_clip(frames, still(1)[0], fps=FPS)
    assert (scores.exposure.dark_frames, scores.exposure.blown_frames) == (4, 2)
    assert scores.exposure.min_sharpness == 0.0
    # The largest jump is from the blown frames back down to the texture, or onto them.
    mean_luma = cv2.cvtColor(still(1)[0], cv2.COLOR_RGB2GRAY).mean()
    assert scores.flicker.brightness_jump == pytest.approx(max(255 - mean_luma, mean_luma), abs=0.5)
    assert scores.fidelity.first_ssim == 1.0
    assert scores.fidelity.last_ssim < 0.05


def test_a_clip_drifting_away_from_its_input_keeps_a_high_start_and_a_low_end():
    start, end = texture(WIDTH, HEIGHT, seed=0).astype(np.float32), texture(WIDTH, HEIGHT, seed=1).astype(np.float32)
    frames = np.stack([(1 - t / 13) * start + t / 13 * end for t in range(14)]).round().astype(np.uint8)
    scores = score_clip(frames, start.astype(np.uint8), fps=FPS)
    assert (scores.fidelity.first_ssim, scores.fidelity.first_psnr) == (1.0, 100.0)
    # Two unrelated textures: 0.31 at analysis size (SSIM stays well above 0 on smooth, low-contrast windows).
    assert scores.fidelity.last_ssim < 0.4
    assert scores.fidelity.last_psnr < 20


def test_a_one_frame_clip_scores_without_pairs():
    frames = still(1)
    scores = score_clip(frames, frames[0].copy(), fps=FPS)
    assert (scores.motion.mean, scores.motion.dynamic, scores.flicker.vbench, scores.flicker.residual) == (
        0.0, False, 1.0, 0.0)


def test_frames_and_input_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match=r"^the input image must be uint8 \(576, 1024, 3\) \(resized as the clip "
                                         r"was conditioned on it\), got uint8 \(64, 64, 3\)$"):
        score_clip(still(2), np.zeros((64, 64, 3), np.uint8), fps=FPS)
    tiny = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^frames must be at least 12 px on their longer side, got \(8, 8\)$"):
        score_clip(tiny, tiny[0], fps=FPS)


@pytest.mark.slow
def test_the_package_imports_without_torch_and_its_rules_without_opencv():
    code = ("import sys; import svdflow.quality.ranking, svdflow.quality.rerolls; "
            "assert 'cv2' not in sys.modules and 'skimage' not in sys.modules; "
            "import svdflow.quality.score; assert 'torch' not in sys.modules; "
            # scipy.stats costs every svdflow process 1.5 s of its start (svdflow/quality/fidelity.py)
            "assert 'scipy.stats' not in sys.modules, 'scipy.stats'; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_psnr_is_scikit_images_for_uint8_images():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(5)
    for noise in (1, 8, 80):
        a = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
        assert psnr(a, b) == float(peak_signal_noise_ratio(a, b, data_range=255)), noise
    assert psnr(a, a) == PSNR_CAP_DB


# The rules, on hand-made scores.

def made_scores(motion: float = 5.0, residual: float = 1.0, last_ssim: float = 0.8, sharpness: float = 100.0,
                dark: int = 0) -> QualityScores:
    return QualityScores.model_validate({
        "frames": 25, "analysis_size": (256, 144),
        "motion": {"mean": motion, "peak": motion, "dynamic": False, "dynamic_pairs": 0, "dynamic_pairs_needed": 6,
                   "dynamic_threshold": 15.4286},
        "flicker": {"vbench": 0.95, "residual": residual, "brightness_jump": 1.0},
        "fidelity": {"first_ssim": 0.9, "last_ssim": last_ssim, "first_psnr": 30.0, "last_psnr": 20.0},
        "exposure": {"dark_frames": dark, "blown_frames": 0, "min_sharpness": sharpness, "input_sharpness": 120.0},
    })


def test_judge_names_each_failed_threshold_with_its_value_and_shortfall():
    thresholds = QcThresholds(min_motion=2.0, max_flicker=0.5, min_end_similarity=0.5, max_dark_frames=0)
    verdict = judge(made_scores(motion=1.5, residual=1.0, last_ssim=0.6, dark=3), thresholds)
    assert verdict == Verdict(passed=False, failures=(
        ThresholdFailure(threshold="min_motion", score="motion.mean", limit=2.0, value=1.5, shortfall=0.25),
        ThresholdFailure(threshold="max_flicker", score="flicker.residual", limit=0.5, value=1.0, shortfall=1.0),
        ThresholdFailure(threshold="max_dark_frames", score="exposure.dark_frames", limit=0.0, value=3.0,
                         shortfall=3.0),
    ))
    assert verdict.shortfall == 4.25
    assert judge(made_scores(motion=2.0, residual=0.5, last_ssim=0.5), thresholds) == Verdict(passed=True, failures=())
    assert judge(made_scores(), QcThresholds()).passed


def test_judge_reads_recorded_scores_again(static_scores):
    recorded = QualityScores.model_validate_json(static_scores.model_dump_json())
    assert recorded == static_scores
    assert judge(recorded, QcThresholds(min_motion=1.0)).failures[0].value == static_scores.motion.mean


def test_thresholds_refuse_unknown_keys_coercion_impossible_ranges_and_too_many_rerolls():
    assert QcThresholds.model_validate({"min_motion": 1, "rerolls": 3}).min_motion == 1.0
    with pytest.raises(ValidationError, match="min_motion 4.0 is above max_motion 2.0: no clip can pass; "
                                              "lower min_motion or raise max_motion"):
        QcThresholds(min_motion=4.0, max_motion=2.0)
    for bad in ({"min_motoin": 1.0}, {"min_motion": "1"}, {"rerolls": 33}, {"min_end_similarity": 1.5},
                {"max_flicker": -1.0}):
        with pytest.raises(ValidationError):
            QcThresholds.model_validate(bad)


def test_the_reroll_seed_sequence_is_pinned():
    assert reroll_seeds(42, 4) == [42, 4208420480898609162, 4412062767388202138, 1849560398059046779,
                                   2052378181798448275]
    assert reroll_seeds(0, 2) == [0, 5655741545546175123, 1674958382548749593]
    assert reroll_seed(7, 0) == 7
    attempt = Attempt(attempt=1, seed=reroll_seed(42, 1), scores=made_scores(),
                      verdict=judge(made_scores(), QcThresholds(min_motion=6.0)))
    assert Attempt.model_validate_json(attempt.model_dump_json()) == attempt
    assert attempt.verdict.failures[0].shortfall == pytest.approx(1 / 6, abs=1e-4)
    with pytest.raises(ValueError, match="^attempt must be 0 or more, got -1$"):
        reroll_seed(7, -1)


def failing(*shortfalls: float) -> Verdict:
    return Verdict(passed=False, failures=tuple(
        ThresholdFailure(threshold="min_motion", score="motion.mean", limit=1.0, value=0.0, shortfall=s)
        for s in shortfalls))


PASSED = Verdict(passed=True, failures=())


def test_the_kept_attempt_is_the_first_that_passes_else_the_fewest_failures_then_the_smallest_shortfall():
    assert kept_attempt([failing(0.1), PASSED, PASSED]) == 1
    assert kept_attempt([failing(0.1, 0.1), failing(0.9), failing(0.5), failing(0.2, 0.0)]) == 2
    assert kept_attempt([failing(0.3), failing(0.3)]) == 0
    with pytest.raises(ValueError, match="^no attempts to choose from$"):
        kept_attempt([])


def test_sweep_variants_rank_passing_first_then_by_rank_sum_then_id():
    variants = [
        Variant(id="city-m60", scores=made_scores(motion=1.0, residual=0.5, last_ssim=0.9, sharpness=150)),
        Variant(id="city-m127", scores=made_scores(motion=4.0, residual=0.8, last_ssim=0.8, sharpness=140)),
        Variant(id="city-m200", scores=made_scores(motion=9.0, residual=2.5, last_ssim=0.4, sharpness=90)),
        Variant(id="city-m255", scores=made_scores(motion=12.0, residual=3.0, last_ssim=0.3, sharpness=80),
                verdict=failing(0.2)),
    ]
    # motion ranks 3,2,1,0; flicker 0,1,2,3; drift 0,1,2,3; sharpness 0,1,2,3.
    assert rank_sums(variants) == [3, 5, 7, 9]
    assert rank_variants(variants) == ["city-m60", "city-m127", "city-m200", "city-m255"]
    twins = [Variant(id="b", scores=made_scores()), Variant(id="a", scores=made_scores())]
    assert rank_variants(twins) == ["a", "b"]
    assert rank_variants([Variant(id="x", scores=made_scores(), verdict=failing(0.1, 0.1)),
                          Variant(id="y", scores=made_scores(), verdict=failing(5.0))]) == ["y", "x"]


@pytest.mark.parametrize("model", [QualityScores, QcThresholds, Attempt, Variant])
def test_every_field_of_the_quality_models_is_described(model):
    schema = model.model_json_schema()
    objects = {model.__name__: schema, **schema.get("$defs", {})}
    missing = [f"{name}.{prop}" for name, obj in objects.items()
               for prop, spec in obj.get("properties", {}).items() if not spec.get("description")]
    assert missing == []
