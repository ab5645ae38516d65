"""Writing a job's results, crash-safe: encoded files carrying the job's provenance, lossless masters,
sidecars and the index."""
