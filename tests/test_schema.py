"""schemas/manifest.schema.json: generated from the Pydantic models, checked in, never stale."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO

from svdflow.cli import main
from svdflow.manifest.schema import PARAMETERS, json_schema
from svdflow.outputs.entry import IndexDocument
from svdflow.outputs.index import RunIndex
from svdflow.outputs.store import OutputStore

SCHEMA_FILE = REPO / "schemas" / "manifest.schema.json"
INDEX_SCHEMA_FILE = REPO / "schemas" / "index.schema.json"
PROVENANCE_SCHEMA_FILE = REPO / "schemas" / "provenance.schema.json"
EXAMPLES = sorted((REPO / "manifests").glob("*.yaml"))


def rendered() -> str:
    """Exactly what `svdflow schema` prints (click.echo adds the final newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"


def test_checked_in_schema_is_current():
    assert SCHEMA_FILE.read_text() == rendered(), "schemas/manifest.schema.json is stale; run `make schemas`"


def test_checked_in_index_schema_is_current_and_every_field_is_described(capsys):
    from svdflow.outputs.entry import index_json_schema

    assert INDEX_SCHEMA_FILE.read_text() == json.dumps(index_json_schema(), indent=2) + "\n", (
        "schemas/index.schema.json is stale; run `make schemas`")
    with pytest.raises(SystemExit):
        main(["schema", "index"])
    assert capsys.readouterr().out == INDEX_SCHEMA_FILE.read_text()
    schema = index_json_schema()
    missing = [f"{name}.{prop}" for name, obj in schema["$defs"].items()
               for prop, spec in obj.get("properties", {}).items() if not spec.get("description")]
    assert missing == []
    assert all(spec.get("description") for spec in schema["properties"].values())
    # Each format's schema stays published: format 1's accepts what the first release wrote, index and
    # sidecar alike; the current one what this svdflow writes.
    import jsonschema

    release = REPO / "tests" / "fixtures" / "release-0.1-smoke"
    first = json.loads((REPO / "schemas" / "index-1.schema.json").read_text())
    assert first["x-svdflow-index-format"] == 1
    jsonschema.validate(json.loads((release / "index.json").read_text()), first)
    jsonschema.validate(json.loads((release / "city.json").read_text()), {"$defs": first["$defs"],
                                                                         "$ref": "#/$defs/IndexEntry"})
    upgraded = RunIndex.load(OutputStore(str(release)))
    document = IndexDocument(svdflow_index=2, jobs=list(upgraded.entries.values()))
    jsonschema.validate(json.loads(document.to_json_bytes()), schema)


def test_checked_in_provenance_schema_is_current_and_every_field_is_described(capsys):
    from svdflow.outputs.entry import provenance_json_schema

    assert PROVENANCE_SCHEMA_FILE.read_text() == json.dumps(provenance_json_schema(), indent=2) + "\n", (
        "schemas/provenance.schema.json is stale; run `make schemas`")
    with pytest.raises(SystemExit):
        main(["schema", "provenance"])
    assert capsys.readouterr().out == PROVENANCE_SCHEMA_FILE.read_text()
    schema = provenance_json_schema()
    missing = [f"{name}.{prop}" for name, obj in schema["$defs"].items()
               for prop, spec in obj.get("properties", {}).items() if not spec.get("description")]
    assert missing == [] and all(spec.get("description") for spec in schema["properties"].values())


def test_schema_command_prints_the_file(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["schema"])
    out, err = capsys.readouterr()
    assert exited.value.code == 0
    assert err == ""
    assert out == SCHEMA_FILE.read_text(), "schemas/manifest.schema.json is stale; run `make schemas`"


def _objects(schema: dict):
    yield "(root)", schema
    yield from schema.get("$defs", {}).items()


def _description(schema: dict, spec: dict) -> str | None:
    """A property's hover text: its own, or (Pydantic drops duplicates) that of the model it refers to."""
    if spec.get("description"):
        return spec["description"]
    ref = spec.get("$ref", "")
    return schema["$defs"][ref.rsplit("/", 1)[-1]].get("description") if ref.startswith("#/$defs/") else None


def test_every_property_has_a_description():
    """Descriptions are the hover text editors show; none may be missing."""
    schema = json_schema()
    missing = [f"{name}.{prop}" for name, obj in schema["$defs"].items()
               for prop, spec in obj.get("properties", {}).items() if not spec.get("description")]
    assert missing == []
    missing_at_root = [prop for prop, spec in schema["properties"].items() if not _description(schema, spec)]
    assert missing_at_root == []
    assert set(schema["$defs"]) >= {"Item", "Sweep", "Defaults", "Hardware", "Output", "ModelSource"}


def test_schema_header_and_strictness():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["x-svdflow-format-version"] == 1
    assert schema["required"] == ["svdflow", "items"]
    for name, obj in _objects(schema):
        if obj.get("type") == "object":
            assert obj.get("additionalProperties") is False, f"{name} must forbid unknown keys"


def test_every_parameter_appears_in_defaults_items_and_sweeps():
    defs = json_schema()["$defs"]
    for model in ("Defaults", "Item", "GlobItem", "TableItem", "Sweep"):
        assert set(PARAMETERS) <= set(defs[model]["properties"]), model


def test_an_item_has_exactly_one_of_image_glob_and_table():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())

    def valid(item: dict) -> bool:
        return validator.is_valid({"svdflow": 1, "items": [item]})

    assert valid({"id": "a", "image": "a.png"})
    assert valid({"glob": "shots/*.png", "id_prefix": "p-", "fps": 6})
    assert valid({"glob": ["a/*.png", "b/*.jpg"]})
    assert valid({"table": "shots.csv", "sweep": {"seed": [1, 2]}})
    assert not valid({"id": "a"})
    assert not valid({"id": "a", "image": "a.png", "glob": "*.png"})
    assert not valid({"glob": "*.png", "table": "shots.csv"})
    assert not valid({"glob": "*.png", "id": "a"})
    assert not valid({"table": "shots.csv", "id_prefix": "p-"})
    items = json_schema()["properties"]["items"]["items"]
    assert [ref["$ref"] for ref in items["oneOf"]] == ["#/$defs/Item", "#/$defs/GlobItem", "#/$defs/TableItem"]


def test_defaults_that_follow_the_model_show_no_fixed_default():
    defaults = json_schema()["$defs"]["Defaults"]["properties"]
    assert [name for name, spec in defaults.items() if "default" not in spec] == [
        "num_frames", "fps", "motion_bucket_id"]
    assert "Unset: the model's own" in defaults["num_frames"]["description"]


def test_examples_validate_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    for path in EXAMPLES:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], path.name
