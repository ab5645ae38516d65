"""The cyclic garbage collector paused while a campaign's records are built."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    A 10,000-item manifest makes ~10^5 nodes, dicts and models, a 100,000-job record as many slots and
    summaries; each batch of new containers triggers a collection that walks all the survivors again,
    which made loading 2-3x slower. The collector's state is put back as it was.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
