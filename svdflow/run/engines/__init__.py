"""Engines: how a run's pending jobs reach pipelines (one process, torchrun ranks, Ray actors)."""
