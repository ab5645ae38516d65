"""Older index formats, brought to the current one as they are read.

Format 1 (svdflow 0.1) had one content key over one material. Its material holds everything format
2's two materials are made of, so an upgraded entry gets the very keys a fresh plan computes for the
same job: a campaign rendered by 0.1 stays up to date. It has no master (`master: null`): it stays up
to date without one, and renders again only when its pixels or (having nothing to re-encode from)
its files must change. An entry is upgraded by its shape, not by the document's `svdflow_index`,
because a job's sidecar is an entry alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from svdflow.manifest.schema import JobParams
from svdflow.outputs.entry import KeyMaterial, ModelRef, OutputMaterial, RenderMaterial


class _OutputSettingsV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    formats: list[str]
    crf: int


class _KeyMaterialV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    render_version: str
    input_sha256: str
    params: JobParams  # type: ignore[valid-type]
    model: ModelRef
    output: _OutputSettingsV1


class _EntryV1(BaseModel):
    """The parts of a format-1 entry that format 2 changed (the rest is validated as format 2)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key_material: _KeyMaterialV1 | None = Field(None)
    output: _OutputSettingsV1


def is_format_1(raw: Any) -> bool:
    return isinstance(raw, dict) and "render_key" not in raw and "key" in raw


def upgrade_entry(raw: Any) -> Any:
    """A format-1 entry (dict) as format 2; anything else unchanged. Raises pydantic's ValidationError
    (located from the entry's root) when the parts format 2 changed do not fit format 1."""
    if not is_format_1(raw):
        return raw
    old = _EntryV1.model_validate(raw)
    upgraded = {**raw, "output": {**old.output.model_dump(), "prores_profile": "hq", "masters": False},
                "master": None, "encoded_from": "render"}
    material = old.key_material
    if material is None:
        return {**upgraded, "key": None, "render_key": None, "output_key": None, "key_material": None}
    new = KeyMaterial(
        render=RenderMaterial.of(render_version=material.render_version, input_sha256=material.input_sha256,
                                 params=material.params, model=material.model),
        output=OutputMaterial.of(formats=material.output.formats, params=material.params,
                                 crf=material.output.crf, prores_profile="hq"))
    return {**upgraded, "key": new.key, "render_key": new.render_key, "output_key": new.output_key,
            "key_material": new.model_dump(mode="json")}
