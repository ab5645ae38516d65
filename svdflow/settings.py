"""svdflow's environment knobs, read in one place (`SVDFLOW_*`; the README lists them).

Everything else a run needs comes from the manifest; these are for the machine (how many CPU
threads a CPU render uses, how long torchrun ranks wait for each other) and for svdflow's own
crash tests.
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from svdflow.errors import DeviceError

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

    def environment(self) -> dict[str, str]:
        """These settings as SVDFLOW_* variables, defaults included: what another process (a Ray
        worker on another machine) needs to run with exactly them."""
        return {f"SVDFLOW_{name.upper()}": str(value) for name, value in self.model_dump().items()
                if value is not None}


_HOW_TO_FIX = {
    "cpu_threads": "is not a positive integer; set it to e.g. 1 or 4, or unset it",
    "dist_timeout_s": "is not a positive number of seconds; set it to e.g. 3600, or unset it",
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
