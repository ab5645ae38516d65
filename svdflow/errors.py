"""svdflow's exceptions and the one place that maps them to exit codes.

Every message says what is wrong, names where (file:line:col or the job id) and the bad value,
and says what to do. Nothing here is ever corrected silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Exit codes are part of the interface (Makefiles branch on them); the README documents them.
EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_INVALID = 2
EXIT_ENVIRONMENT = 3
EXIT_QC_FAILED = 4  # every job rendered, some did not pass their qc thresholds (failed jobs: 1 wins)
EXIT_INTERRUPTED = 130


class SvdflowError(Exception):
    """Base of every error svdflow raises on purpose."""

    exit_code = EXIT_JOBS_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One problem in a manifest, located in its source text."""

    file: str
    line: int | None
    col: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.message}"


def in_file_order(problems) -> list[Problem]:
    """Problems sorted by line and column, whole-file ones first: the order they are printed in."""
    return sorted(problems, key=lambda p: (p.line or 0, p.col or 0))


# Problems shown at once; the rest are counted: a million broken items need one fix, not a million lines.
MAX_SHOWN_PROBLEMS = 100


class ManifestError(SvdflowError):
    """A manifest that cannot be used: carries every problem found, not just the first (the first
    MAX_SHOWN_PROBLEMS of them, in the order given, and how many `more`)."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: list[Problem], document: tuple[Any, ...] | None = None, more: int = 0):
        problems = list(problems)
        self.problems = problems[:MAX_SHOWN_PROBLEMS]
        self.more = more + len(problems) - len(self.problems)
        # What further checks of the parts that passed need, when the file parsed but failed the
        # schema (manifest.loader: the written items that passed, the source map, the job limit).
        self.document = document
        super().__init__("\n".join([*(str(p) for p in self.problems), *self.more_lines()]))

    def more_lines(self) -> list[str]:
        """The line that counts the problems not shown, if any."""
        return [f"... and {self.more:,} more error{'s' * (self.more != 1)}"] if self.more else []

    @property
    def count(self) -> int:
        """Every problem found, shown or not."""
        return len(self.problems) + self.more


class UsageError(SvdflowError):
    """A command line that asks for something impossible (unknown --only id, missing index...)."""

    exit_code = EXIT_INVALID


class ForeignFolderError(SvdflowError):
    """The output folder holds files svdflow did not write and is not marked as svdflow's: refused
    before anything is written (svdflow.outputs.ownership)."""

    exit_code = EXIT_INVALID


class EnvironmentProblem(SvdflowError):
    """The machine cannot do the work: model missing or gated, device absent, output dir locked."""

    exit_code = EXIT_ENVIRONMENT


class ModelLoadError(EnvironmentProblem):
    """The pipeline could not be loaded from its source."""


class DeviceError(EnvironmentProblem):
    """The requested device or hardware setting is not available here."""


class LockHeldError(EnvironmentProblem):
    """Another live svdflow process holds the output directory."""


class OutputStoreError(EnvironmentProblem):
    """The output folder itself cannot be used: its disk is full, it is read-only or gone, a remote
    store stopped answering. Not one job's failure: every job after it would fail the same way, so a
    run stops at the first one, keeps what finished, and exits 3 (svdflow.outputs.failures makes them).
    """

    def __init__(self, folder: str, cause: str, fix: str, recorded: int | None = None,
                 label: str = "output folder", gone: bool = False):
        self.folder, self.cause, self.fix, self.recorded, self.label, self.gone = (
            folder, cause, fix, recorded, label, gone)
        message = f"{label} {folder}: {cause}; {fix}, then run again"
        if recorded is not None:
            jobs = f"{recorded} job{'s' * (recorded != 1)} finished in this run {'is' if recorded == 1 else 'are'}"
            message += (f" ({jobs} recorded in the folder that went away)" if gone else
                        f" ({jobs} recorded; the next run renders only what is missing)")
        super().__init__(message)

    def __reduce__(self):  # crosses process boundaries (Ray workers, torchrun ranks) with its parts
        return OutputStoreError, (self.folder, self.cause, self.fix, self.recorded, self.label, self.gone)

    def after(self, recorded: int) -> OutputStoreError:
        """The same error, saying how many jobs the stopped run finished and recorded."""
        return OutputStoreError(self.folder, self.cause, self.fix, recorded, self.label, self.gone)


class JobError(SvdflowError):
    """One job failed; the run records it and goes on."""

    exit_code = EXIT_JOBS_FAILED


class InputError(JobError):
    """A job's input image could not be fetched or decoded."""


class InputTooLarge(InputError):
    """A fetched file is past its size limit (`size`: its bytes, when known before reading them)."""

    def __init__(self, message: str, size: int | None = None, limit: int = 0):
        super().__init__(message)
        self.size, self.limit = size, limit

    def __reduce__(self):
        return InputTooLarge, (self.message, self.size, self.limit)


class RenderError(JobError):
    """The pipeline failed on a job."""


class OutputWriteError(JobError):
    """A job's outputs could not be encoded or written for a reason of its own (an odd width for
    H.264, a folder in the way of its file); the output folder failing is an OutputStoreError."""


class MasterError(JobError):
    """A job's lossless master is missing, damaged or does not hold the recorded frames."""


class VerifyMismatch(SvdflowError):
    """`rerender --verify` produced frames that differ from the recorded ones."""

    exit_code = EXIT_JOBS_FAILED


class Interrupted(SvdflowError):
    """The run was stopped by Ctrl-C or SIGTERM after recording what was finished."""

    exit_code = EXIT_INTERRUPTED


class InternalError(SvdflowError):
    """svdflow failed on something it did not expect (a bug): the run stopped after recording what
    finished; the message names the exception so that it can be reported."""

    exit_code = EXIT_JOBS_FAILED


def describe_bug(exc: BaseException) -> str:
    """One line for an unexpected exception: its type and message (no traceback)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def exit_code_for(exc: BaseException) -> int:
    """The single mapping from an exception to the process exit code."""
    if isinstance(exc, SvdflowError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_JOBS_FAILED
