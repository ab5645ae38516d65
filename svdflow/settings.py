"""svdflow's environment knobs, read in one place (`SVDFLOW_*`; the README lists them).

Everything else a run needs comes from the manifest; these are for the machine (how many CPU
threads a CPU render uses, how long torchrun ranks wait for each other) and for svdflow's own
crash tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from svdflow.errors import DeviceError


def user_cache_dir(env: Mapping[str, str] | None = None) -> str:
    """svdflow's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache; an empty value is unset):
    compiled kernels, the locks of remote output folders, the report cache's key."""
    env = os.environ if env is None else env
    return os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "svdflow")


# Rendering a video can take minutes and a torchrun rank waits for the slowest at the end: be patient.
DEFAULT_DIST_TIMEOUT_S = 24 * 3600.0


class Settings(BaseSettings):
    """The SVDFLOW_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="SVDFLOW_", extra="forbid", frozen=True)

    cpu_threads: int = Field(
        1, ge=1, description="SVDFLOW_CPU_THREADS: torch threads of a CPU render. CPU frames depend on the "
                             "thread count, so it is fixed (1 unless set) and recorded in every entry.")
    dist_timeout_s: float = Field(
        DEFAULT_DIST_TIMEOUT_S, gt=0,
        description="SVDFLOW_DIST_TIMEOUT_S: how long torchrun/accelerate ranks wait for each other.")
    crash_at: str | None = Field(
        None, description="SVDFLOW_CRASH_AT=<point>[@N][=kill|stop|<errno name>]: SIGKILL (or SIGSTOP, or "
                          "raise that OSError in) this process the N-th time it reaches a fault point "
                          "(svdflow.faults); for svdflow's own crash and fault-injection tests.")

    extra_protocols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="SVDFLOW_EXTRA_PROTOCOLS=ftp,sftp: fsspec protocols to open beyond svdflow's own list "
                        "(svdflow.locations.ALLOWED_PROTOCOLS), comma-separated, for inputs, tables and output "
                        "folders alike. Every protocol added is one that a manifest, a table or an index written "
                        "by someone else can make svdflow open: add only ones you trust.")

    @field_validator("extra_protocols", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            value = [part.strip().lower() for part in value.split(",") if part.strip()]
        for protocol in value:
            if not _PROTOCOL_NAME.fullmatch(str(protocol)):
                raise ValueError(f"{protocol!r} is not a protocol name")
        return tuple(value)

    def environment(self) -> dict[str, str]:
        """These settings as SVDFLOW_* variables, defaults included: what another process (a Ray
        worker on another machine) needs to run with exactly them."""
        return {f"SVDFLOW_{name.upper()}": ",".join(value) if isinstance(value, tuple) else str(value)
                for name, value in self.model_dump().items() if value is not None and value != ()}


_PROTOCOL_NAME = re.compile(r"[a-z][a-z0-9+.-]*")


_HOW_TO_FIX = {
    "cpu_threads": "is not a positive integer; set it to e.g. 1 or 4, or unset it",
    "dist_timeout_s": "is not a positive number of seconds; set it to e.g. 3600, or unset it",
    "extra_protocols": "is not a comma-separated list of protocol names; set it to e.g. ftp,sftp, or unset it",
}


def load_settings() -> Settings:
    """The knobs from the process environment, read when called (a test or a wrapper may set them
    late); a bad value is a DeviceError naming the variable, its value and the fix (exit code 3)."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0])
        variable = f"SVDFLOW_{name.upper()}"
        raise DeviceError(f"{variable}={error['input']!r} {_HOW_TO_FIX.get(name, 'is not valid; unset it')}") from None


def extra_protocols() -> tuple[str, ...]:
    """SVDFLOW_EXTRA_PROTOCOLS, parsed once per value: every input a run opens asks (100,000 of them
    in a campaign), and building the whole Settings costs a millisecond."""
    return _extra_protocols(os.environ.get("SVDFLOW_EXTRA_PROTOCOLS"))


@lru_cache(maxsize=8)
def _extra_protocols(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    try:
        return Settings.model_validate({"extra_protocols": raw}).extra_protocols
    except ValidationError:
        raise DeviceError(f"SVDFLOW_EXTRA_PROTOCOLS={raw!r} {_HOW_TO_FIX['extra_protocols']}") from None
