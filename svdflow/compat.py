"""What release 0.1 wrote stays what svdflow writes for the same work.

A field added to a written model after release 0.1 (a per-job parameter, a hardware setting, a part
of the key material) is written only when it differs from its default. So a job that does not use
it keeps its 0.1 content key (nothing re-renders after an upgrade), an index written by 0.1 is
written back byte for byte, and reading an old file gives the new field its default: the default
always means "as before the field existed".
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, model_serializer


class OmitsNewDefaults(BaseModel):
    """A model whose fields beyond `RELEASED_FIELDS` are left out of its dump while at their default."""

    RELEASED_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        fields = type(self).model_fields
        return {name: value for name, value in data.items()
                if name in self.RELEASED_FIELDS or name not in fields
                or getattr(self, name) != fields[name].get_default(call_default_factory=True)}
