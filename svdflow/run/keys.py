"""A job's keys: the render key hashes everything that decides its pixels, the output key everything
that decides its files from those pixels (`svdflow.outputs.entry` defines both materials and the rule
that keeps later parameters out of them at their defaults).

A rerun compares keys to skip finished work, so anything that changes the output must be in a key,
and nothing that does not (job order, batch, process, hardware, wall-clock) may be.
"""

from __future__ import annotations

import hashlib

from svdflow import RENDER_VERSION
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import KeyMaterial, ModelRef, OutputMaterial, RenderMaterial


def key_material(job: Job, input_sha256: str, spec: RunSpec) -> KeyMaterial:
    """What goes into the keys, kept in the index so a mismatch can be explained field by field."""
    return KeyMaterial(
        render=RenderMaterial.of(
            render_version=RENDER_VERSION, input_sha256=input_sha256, params=job.params,
            model=ModelRef(source=spec.model.source, revision=spec.model.revision, variant=spec.model.variant),
            fp8=spec.hardware.fp8),
        output=OutputMaterial.of(formats=spec.formats, params=job.params, crf=spec.crf,
                                 prores_profile=spec.prores_profile),
    )


def frames_sha256(frames) -> str:
    """Hash of the decoded uint8 frames (shape included): what `rerender --verify` compares."""
    digest = hashlib.sha256(f"{tuple(frames.shape)}|{frames.dtype}|".encode())
    digest.update(memoryview(frames).cast("B") if frames.flags["C_CONTIGUOUS"] else frames.tobytes())
    return digest.hexdigest()
