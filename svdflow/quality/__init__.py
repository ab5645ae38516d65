"""Quality control: scores computed from a clip's frames, and the qc verdict on them.

The scoring side (`score.score_clip` and the measuring modules it calls) needs OpenCV, scikit-image and
numpy, never torch: it runs where frames are already in memory, on a writer thread or over an old
folder's masters. The verdict side (`thresholds`, `verdict`, `rerolls`, `ranking`) is pure data and
rules on recorded scores, so that changing a threshold re-judges a campaign without a frame.

This file imports nothing: the manifest's schema will take `QcThresholds` from here, and must not
pull in OpenCV to do so.
"""
