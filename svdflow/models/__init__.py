"""Model sources, without torch: what a manifest's `model.source` names and what follows from it.

`source` tells builtin, local folder and hub id apart and finds the hub cache; `tiny_config` and
`toy_config` are the builtins' configs as plain data (builtin:tiny is built from code by
pipeline/tiny.py; builtin:toy is a trained pipeline folder shipped here, in `toy/`); `defaults` reads
the per-job defaults a model sets (its num_frames, SVD-XT 1.1's fixed conditioning); `toy_checks`
measures what builtin:toy promises. Both manifest/ (validation) and pipeline/ (loading) read this room.
"""
