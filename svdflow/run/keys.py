"""A job's keys: the render key hashes everything that decides its pixels, the output key everything
that decides its files from those pixels (`svdflow.outputs.entry` defines both materials and the rule
that keeps later parameters out of them at their defaults).

A rerun compares keys to skip finished work, so anything that changes the output must be in a key,
and nothing that does not (job order, batch, process, hardware, wall-clock) may be.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple

from svdflow import RENDER_VERSION
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import (
    KeyMaterial,
    ModelRef,
    OutputMaterial,
    RenderMaterial,
    content_canonical,
    keyed_params_json,
    render_canonical,
)


def key_material(job: Job, input_sha256: str, spec: RunSpec) -> KeyMaterial:
    """What goes into the keys, kept in the index so a mismatch can be explained field by field."""
    return KeyMaterial(
        render=RenderMaterial.of(
            render_version=RENDER_VERSION, input_sha256=input_sha256, params=job.params,
            model=_model_ref(spec.model.source, spec.model.revision, spec.model.variant), fp8=spec.hardware.fp8),
        output=_output_material(job, spec),
    )


class JobKeys(NamedTuple):
    """A job's three keys, as `key_material` would give them (tests/test_keys.py holds them equal),
    computed without building the material: a plan needs the keys of every job, the material only of
    those that render or changed."""

    key: str
    render_key: str
    output_key: str


def job_keys(job: Job, input_sha256: str, spec: RunSpec) -> JobKeys:
    output = _output_material(job, spec)
    render = render_canonical(render_version=RENDER_VERSION, input_sha256=input_sha256,
                              params_json=keyed_params_json(job.params, output=False),
                              model=_model_ref(spec.model.source, spec.model.revision, spec.model.variant),
                              fp8=spec.hardware.fp8)
    return JobKeys(key=hashlib.sha256(content_canonical(output.canonical, render)).hexdigest(),
                   render_key=hashlib.sha256(render).hexdigest(), output_key=output.digest)


def _output_material(job: Job, spec: RunSpec) -> OutputMaterial:
    return OutputMaterial.of(formats=spec.formats, params=job.params, crf=spec.crf,
                             prores_profile=spec.prores_profile)


@lru_cache(maxsize=64)
def _model_ref(source: str, revision: str | None, variant: str | None) -> ModelRef:
    return ModelRef(source=source, revision=revision, variant=variant)


def frames_sha256(frames) -> str:
    """Hash of the decoded uint8 frames (shape included): what `rerender --verify` compares."""
    digest = hashlib.sha256(f"{tuple(frames.shape)}|{frames.dtype}|".encode())
    digest.update(memoryview(frames).cast("B") if frames.flags["C_CONTIGUOUS"] else frames.tobytes())
    return digest.hexdigest()
