"""The scores of one clip: the shape they are recorded in (index entry, sidecar, provenance).

Every figure is defined in the README's "Quality scores" section and measured by the module named in
its part's docstring. Figures are rounded to 4 decimals: the record stays short and a score does not
change with the last bits of a float. `version` names the definitions: scores of different versions
are not compared, and a re-judge of older scores says so rather than mixing them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SCORES_VERSION = 1


class _Scores(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MotionScores(_Scores):
    """Optical flow between consecutive frames (svdflow.quality.motion)."""

    mean: float = Field(description="Mean optical-flow magnitude over every pixel and consecutive pair of frames, "
                                    "in pixels per frame on a frame scaled to 1024 px on its longer side.")
    peak: float = Field(description="The largest, over consecutive pairs, of the mean of a pair's top 5% flow "
                                    "magnitudes (VBench's per-pair figure), in the same pixels per frame.")
    dynamic: bool = Field(description="VBench's dynamic-degree verdict: at least `dynamic_pairs_needed` pairs "
                                      "have a top-5% magnitude above `dynamic_threshold`.")
    dynamic_pairs: int = Field(description="Consecutive pairs whose top-5% flow magnitude is above "
                                           "`dynamic_threshold`.")
    dynamic_pairs_needed: int = Field(description="Pairs over the threshold that make a clip dynamic: "
                                                  "max(1, round(4 x frames / 16)), as VBench.")
    dynamic_threshold: float = Field(description="VBench's threshold 6 x (shorter side / 256) x 8 / fps, in the "
                                                 "same pixels per frame.")


class FlickerScores(_Scores):
    """Frame-to-frame changes that motion does not explain (svdflow.quality.flicker)."""

    vbench: float = Field(description="VBench's temporal flickering: (255 - mean absolute difference of "
                                      "consecutive frames) / 255 on the full frames; 1 is no change at all.")
    residual: float = Field(description="Mean absolute luma difference (0-255) between each frame and the "
                                        "previous one warped onto it by their optical flow: the change left "
                                        "after motion compensation. qc's max_flicker applies to it.")
    brightness_jump: float = Field(description="The largest change of a frame's mean luma (0-255) from the "
                                               "previous frame's.")


class FidelityScores(_Scores):
    """The clip against its input image as conditioned (svdflow.quality.fidelity)."""

    first_ssim: float = Field(description="SSIM of the first frame's luma against the input's, at analysis "
                                          "size; qc's min_input_similarity applies to it.")
    last_ssim: float = Field(description="SSIM of the last frame's luma against the input's (drift); qc's "
                                         "min_end_similarity applies to it.")
    first_psnr: float = Field(description="PSNR in dB of the first frame's RGB against the input's, at analysis "
                                          "size; 100 when they are identical.")
    last_psnr: float = Field(description="PSNR in dB of the last frame's RGB against the input's, at analysis "
                                         "size; 100 when they are identical.")


class ExposureScores(_Scores):
    """Frames too dark or too bright, and the blurriest frame (svdflow.quality.exposure)."""

    dark_frames: int = Field(description="Frames whose mean luma is below 16 (video black) on 0-255.")
    blown_frames: int = Field(description="Frames whose mean luma is above 239 on 0-255.")
    min_sharpness: float = Field(description="The lowest, over frames, variance of the luma's Laplacian "
                                             "(3x3 kernel) at analysis size.")
    input_sharpness: float = Field(description="The same variance of the input image's luma, for comparison.")


class QualityScores(_Scores):
    """Every score of one clip."""

    version: int = Field(SCORES_VERSION, description="Which definitions the scores follow; only scores of one "
                                                     "version compare.")
    frames: int = Field(description="Frames scored.")
    analysis_size: tuple[int, int] = Field(description="[width, height] the frames were scored at.")
    motion: MotionScores = Field(description="Optical-flow motion and VBench's dynamic verdict.")
    flicker: FlickerScores = Field(description="Flicker: VBench's formula, the motion-compensated residual, "
                                               "the largest brightness jump.")
    fidelity: FidelityScores = Field(description="Similarity of the first and last frames to the input.")
    exposure: ExposureScores = Field(description="Dark and blown frames, sharpness.")
