"""The manifest: schema, positional YAML loading and resolution into jobs."""

from __future__ import annotations

import os

from svdflow.manifest.loader import LoadedManifest, load_manifest
from svdflow.manifest.resolve import Job, RunSpec, derive_seed, resolve


def load_run_spec(path: str | os.PathLike[str]) -> RunSpec:
    """Read, validate and resolve a manifest file; raises ManifestError with every problem found."""
    return resolve(load_manifest(path))


__all__ = ["Job", "LoadedManifest", "RunSpec", "derive_seed", "load_manifest", "load_run_spec", "resolve"]
