"""Writing a job's results: encoded videos, frames, sidecars and the index, crash-safe."""
