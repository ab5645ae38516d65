"""How close the clip stays to its input: its first frame (the model is conditioned on the input, so a
low score is a clip that starts somewhere else) and its last (drift).

scikit-image's SSIM (7x7 uniform window, data range 255) on the analysis luma, and PSNR on the
analysis RGB, which also sees a colour shift that luma misses. Identical images have an infinite PSNR;
it is recorded as PSNR_CAP_DB so that every score is a finite JSON number.

PSNR is written out here, as scikit-image computes it for uint8 (float64 MSE, data range 255): its
module imports scipy.stats, 1.5 s of every `svdflow run`'s start (and every Ray actor's and torchrun
rank's) for one line of arithmetic. SSIM's module imports only scipy.ndimage.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from svdflow.quality.analysis import Analysis
from svdflow.quality.scores import FidelityScores

PSNR_CAP_DB = 100.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    # SSIM's window needs 7 px each way; a smaller frame has no structure to compare at that scale.
    if min(a.shape) < 7:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(structural_similarity(a, b, data_range=255))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    if np.array_equal(a, b):
        return PSNR_CAP_DB
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, dtype=np.float64)
    return min(PSNR_CAP_DB, float(10 * np.log10(255.0**2 / mse)))


def fidelity_scores(analysis: Analysis) -> FidelityScores:
    first, last = 0, len(analysis.luma) - 1
    return FidelityScores(
        first_ssim=round(ssim(analysis.input_luma, analysis.luma[first]), 4),
        last_ssim=round(ssim(analysis.input_luma, analysis.luma[last]), 4),
        first_psnr=round(psnr(analysis.input_rgb, analysis.rgb[first]), 4),
        last_psnr=round(psnr(analysis.input_rgb, analysis.rgb[last]), 4),
    )
