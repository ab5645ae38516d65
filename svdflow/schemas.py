"""Every JSON Schema svdflow publishes, by kind: the one list `svdflow schema KIND`, `make schemas` and
the staleness test go through. Each kind is generated from the Pydantic models of its file and checked in
as `schemas/<kind>.schema.json`. A new file format adds its kind here and nowhere else.

(`schemas/index-1.schema.json` and `index-2.schema.json`, the index.json formats of svdflow 0.1 and of
0.2 before the record became JSON Lines, are not generated: they are kept as published.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def _manifest() -> dict[str, Any]:
    from svdflow.manifest.schema import json_schema

    return json_schema()


def _index() -> dict[str, Any]:
    from svdflow.outputs.entry import index_json_schema

    return index_json_schema()


def _run() -> dict[str, Any]:
    from svdflow.outputs.entry import run_json_schema

    return run_json_schema()


def _sidecar() -> dict[str, Any]:
    from svdflow.outputs.entry import sidecar_json_schema

    return sidecar_json_schema()


def _provenance() -> dict[str, Any]:
    from svdflow.outputs.entry import provenance_json_schema

    return provenance_json_schema()


# kind -> (what it describes, its generator). Imports are deferred: printing one schema loads one model.
SCHEMAS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "manifest": ("a manifest (YAML read as JSON)", _manifest),
    "index": ("a line of index.jsonl (and of the record's parts): one job, less what its run shares", _index),
    "run": ("a line of runs.jsonl: what all jobs of one run share", _run),
    "sidecar": ("<id>.json: one job's index entry, written beside its files", _sidecar),
    "provenance": ("the JSON embedded in every file svdflow writes", _provenance),
}


def schema_text(kind: str) -> str:
    """The schema of `kind` as checked in: indented JSON and a final newline."""
    return json.dumps(SCHEMAS[kind][1](), indent=2) + "\n"


def file_name(kind: str) -> str:
    return f"{kind}.schema.json"


def write_schemas(folder: str) -> list[str]:
    """Write every kind's schema into `folder`; the paths written."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for kind in SCHEMAS:
        path = os.path.join(folder, file_name(kind))
        with open(path, "w", encoding="utf-8") as f:
            f.write(schema_text(kind))
        paths.append(path)
    return paths
