"""How much one manifest may ask for: a few lines of YAML must not be able to take a machine down.

Three keys of 256 swept values are 16.7 million jobs; a glob over a bucket or a table of millions
of rows can be as many. The jobs a manifest expands to are counted before they are made (a sweep
from its lists' lengths, globs and tables as their matches and rows are read) and past the
manifest's `max_jobs` (default `DEFAULT_MAX_JOBS`) it is invalid, located where the count went over.
Files are read up to a size limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Well above real campaigns (a campaign of 10,000 images swept 3 x 2 is 60,000 jobs), well below what
# fills a machine's memory (a resolved job is a few KB: 100,000 of them are some hundreds of MB).
DEFAULT_MAX_JOBS = 100_000
# 100,000 items written out take some 20 MB; a bigger file is a mistake (a video passed by mistake).
MAX_MANIFEST_BYTES = 64 * 2**20
# A table of a million rows is some 100 MB; anything far larger is a mistake (a video, an archive).
MAX_TABLE_BYTES = 512 * 2**20


def sweep_jobs(sweep: dict[str, list]) -> int:
    """The jobs one item's sweep makes (1 without one), from the lengths of its lists alone."""
    return math.prod(len(values) for values in sweep.values())


def sweep_lengths(sweep: dict[str, list]) -> str:
    """How a sweep's size comes about: "256 values of fps x 3 of seed"."""
    parts = [f"{len(values)} {'values of ' if i == 0 else 'of '}{key}" for i, (key, values) in enumerate(sweep.items())]
    return " x ".join(parts)


@dataclass
class JobBudget:
    """The jobs counted so far against the manifest's limit, entry by entry, in file order."""

    limit: int
    count: int = 0

    @property
    def room(self) -> int:
        """How many more jobs fit."""
        return max(0, self.limit - self.count)

    def take(self, jobs: int) -> bool:
        """Count `jobs` more; False once the count is past the limit."""
        self.count += jobs
        return self.count <= self.limit

    def over_message(self, name: str, made: str, fix: str, before: int, exact: bool) -> str:
        """The problem of the entry `name` (items[3].sweep) that took the count past the limit: what it
        `made` ("this sweep makes 16,777,216 jobs (...)"), with `before` jobs counted ahead of it;
        `exact`: the count is the whole manifest's (else counting stopped where it went over)."""
        taken = f" ({before:,} of them taken by the items before it)" if before else ""
        raise_to = (f"max_jobs: {self.count}" if exact else
                    "max_jobs: <the number of jobs you mean to render>")
        return (f"{name}: {made}, past the limit of {self.limit:,} jobs per manifest{taken}; {fix}, or raise "
                f"the limit at the top level of the manifest ({raise_to})")
