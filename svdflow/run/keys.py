"""Content keys: one hash of everything that decides a job's pixels and files.

A rerun compares keys to skip finished work, so anything that changes the output must be in the
key, and nothing that does not (job order, batch, process, wall-clock) may be.
"""

from __future__ import annotations

import hashlib

from svdflow import RENDER_VERSION
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import KeyMaterial, ModelRef, OutputSettings


def key_material(job: Job, input_sha256: str, spec: RunSpec) -> KeyMaterial:
    """What goes into the key, kept in the index so a mismatch can be explained field by field."""
    return KeyMaterial(
        render_version=RENDER_VERSION,
        input_sha256=input_sha256,
        params=job.params,
        model=ModelRef(source=spec.model.source, revision=spec.model.revision, variant=spec.model.variant),
        output=OutputSettings(formats=sorted(spec.formats), crf=spec.crf),
        fp8=spec.hardware.fp8,
    )


def content_key(material: KeyMaterial) -> str:
    return hashlib.sha256(material.canonical_json()).hexdigest()


def frames_sha256(frames) -> str:
    """Hash of the decoded uint8 frames (shape included): what `rerender --verify` compares."""
    digest = hashlib.sha256(f"{tuple(frames.shape)}|{frames.dtype}|".encode())
    digest.update(memoryview(frames).cast("B") if frames.flags["C_CONTIGUOUS"] else frames.tobytes())
    return digest.hexdigest()
