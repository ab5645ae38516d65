"""Process-wide settings a run changes (float32 matmul precision, the inductor cache's environment
variables, dynamo's and inductor's config), each with the value it had before, so that a run or a
rerender inside someone else's program leaves that program as it found it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

_UNSET = object()


class ProcessChanges:
    """The changes made so far, oldest first; `restore()` undoes them newest first."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def setenv_default(self, name: str, value: str) -> str:
        """os.environ.setdefault, remembered; returns the value in effect."""
        if name not in os.environ:
            os.environ[name] = value
            self._undo.append(lambda: os.environ.pop(name, None))
        return os.environ[name]

    def setenv(self, name: str, value: str) -> None:
        """os.environ[name] = value, remembered (unset again, or its value before, on restore)."""
        before = os.environ.get(name)
        if before == value:
            return
        os.environ[name] = value
        if before is None:
            self._undo.append(lambda: os.environ.pop(name, None))
        else:
            self._undo.append(lambda: os.environ.__setitem__(name, before))

    def set_attr(self, owner: Any, name: str, value: Any) -> None:
        """Set a config attribute (torch._dynamo.config.recompile_limit, ...), remembered."""
        before = getattr(owner, name, _UNSET)
        if before is value or before == value:
            return
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, before) if before is not _UNSET else delattr(owner, name))

    def call(self, setter: Callable[[Any], None], getter: Callable[[], Any], value: Any) -> None:
        """setter(value), remembering getter()'s value before (torch.set_float32_matmul_precision)."""
        before = getter()
        if before == value:
            return
        setter(value)
        self._undo.append(lambda: setter(before))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
