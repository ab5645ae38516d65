"""The manifest: schema, positional YAML loading and resolution into jobs."""

from __future__ import annotations

import os

from svdflow.errors import ManifestError, in_file_order
from svdflow.manifest.loader import LoadedManifest, load_manifest
from svdflow.manifest.resolve import Job, RunSpec, derive_seed, job_id_problems, resolve


def load_run_spec(path: str | os.PathLike[str]) -> RunSpec:
    """Read, validate and resolve a manifest file; raises ManifestError with every problem found."""
    try:
        loaded = load_manifest(path)
    except ManifestError as exc:
        if exc.document is None:
            raise
        # The schema failed: the ids of the items that passed it are checked too, so duplicate
        # ids do not wait for a second round.
        extra = job_id_problems(*exc.document)
        if not extra:
            raise
        raise ManifestError(in_file_order(exc.problems + extra), more=exc.more) from None
    return resolve(loaded)


__all__ = ["Job", "LoadedManifest", "RunSpec", "derive_seed", "load_manifest", "load_run_spec", "resolve"]
