"""Getting a StableVideoDiffusionPipeline: from the hub, a local folder, or built from code.

`models` resolves a manifest's `model:` section to a loaded pipeline and turns every loading failure
into a ModelLoadError that says what to do; `tiny` builds the `builtin:tiny` pipeline and the
full-size SVD / SVD-XT architectures with random weights for benchmarks.
"""
