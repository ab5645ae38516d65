"""schemas/manifest.schema.json: generated from the Pydantic models, checked in, never stale."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import REPO, write_image

from svdflow.cli import main
from svdflow.manifest.schema import PARAMETERS, json_schema
from svdflow.outputs.index import RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.schemas import SCHEMAS, schema_text

SCHEMA_FILE = REPO / "schemas" / "manifest.schema.json"
INDEX_SCHEMA_FILE = REPO / "schemas" / "index.schema.json"
EXAMPLES = sorted((REPO / "manifests").glob("*.yaml"))


def rendered() -> str:
    """Exactly what `svdflow schema` prints (click.echo adds the final newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"


def test_checked_in_schema_is_current():
    assert SCHEMA_FILE.read_text() == rendered(), "schemas/manifest.schema.json is stale; run `make schemas`"


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_every_published_schema_is_current_and_every_field_is_described(kind, capsys, tmp_path):
    checked_in = (REPO / "schemas" / f"{kind}.schema.json").read_text()
    assert checked_in == schema_text(kind), f"schemas/{kind}.schema.json is stale; run `make schemas`"
    with pytest.raises(SystemExit):
        main(["schema", kind])
    assert capsys.readouterr().out == checked_in
    schema = json.loads(checked_in)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://svdflow.dev/schemas/{kind}.schema.json"
    missing = [f"{name}.{prop}" for name, obj in _objects(schema)
               for prop, spec in obj.get("properties", {}).items() if not _description(schema, spec)]
    assert missing == []


def test_make_schemas_writes_every_kind(tmp_path, capsys):
    folder = tmp_path / "new"
    with pytest.raises(SystemExit) as exited:
        main(["schema", "--write", str(folder)])
    assert exited.value.code == 0
    assert capsys.readouterr().out == "".join(f"{folder / f'{kind}.schema.json'}\n" for kind in SCHEMAS)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{kind}.schema.json" for kind in SCHEMAS)
    assert all((folder / f"{k}.schema.json").read_text() == schema_text(k) for k in SCHEMAS)


def test_every_format_keeps_its_schema_and_what_svdflow_writes_fits_the_current_ones(tmp_path):
    """Format 1's schema accepts what the first release wrote, index and sidecar alike; the current ones
    what this svdflow writes of the same jobs (the release's folder, upgraded by a compaction)."""
    import jsonschema

    release = REPO / "tests" / "fixtures" / "release-0.1-smoke"
    first = json.loads((REPO / "schemas" / "index-1.schema.json").read_text())
    assert first["x-svdflow-index-format"] == 1
    assert json.loads((REPO / "schemas" / "index-2.schema.json").read_text())["x-svdflow-index-format"] == 2
    jsonschema.validate(json.loads((release / "index.json").read_text()), first)
    jsonschema.validate(json.loads((release / "city.json").read_text()), {"$defs": first["$defs"],
                                                                         "$ref": "#/$defs/IndexEntry"})
    out = tmp_path / "out"
    shutil.copytree(release, out)
    RunIndex.load(OutputStore(str(out))).finish()
    schemas = {kind: json.loads((REPO / "schemas" / f"{kind}.schema.json").read_text())
               for kind in ("index", "run", "sidecar")}
    lines = (out / "index.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        jsonschema.validate(json.loads(line), schemas["index"])
    for line in (out / "runs.jsonl").read_text().splitlines():
        jsonschema.validate(json.loads(line), schemas["run"])
    for entry in RunIndex.load(OutputStore(str(out))):
        jsonschema.validate(entry.model_dump(mode="json"), schemas["sidecar"])


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


# The golden invalid manifests the schema cannot refuse, and why: every other one must fail schema
# validation, so an editor shows its error. (YAML that does not parse is no JSON to validate.)
NOT_IN_JSON_SCHEMA = {
    # JSON Schema's data model: an integer is any number with a zero fraction (2020-12, 6.1.1), and
    # YAML and JSON parsers give editors 127 for 127.0.
    "float_for_int": "127.0 is an integer in JSON Schema's data model",
    # Parsers keep one of two equal keys; a schema sees the parsed mapping.
    "duplicate_key_in_item": "a YAML duplicate key", "duplicate_top_key": "a YAML duplicate key",
    # uniqueItems compares whole items, not one property of them.
    "duplicate_item_id": "ids unique across items", "item_id_reused_by_a_sweep": "ids unique across items",
    "sweep_generates_existing_id": "generated job ids unique across items",
    "sweep_id_collision": "generated job ids unique across items",
    # No arithmetic between values.
    "sweep_too_many_jobs": "the product of the sweep lists' lengths",
    "loop_frames_too_many": "loop_frames against half of segments x num_frames",
    "loop_frames_swept_too_many": "loop_frames against half of segments x num_frames",
    "qc_min_above_max": "min_motion against max_motion",
    # Defaults apply only where no item sets its own value.
    "crossfade_one_frame": "a default against every item's own values",
    "qc_merged_range": "a default against every item's own values",
    # What files, folders, tables and models hold.
    **dict.fromkeys(["glob_bad_id", "glob_duplicate_ids", "glob_hidden_only", "glob_id_clash", "glob_no_match",
                     "glob_on_http", "glob_too_many_files", "model_config_not_cached",
                     "model_folder_without_unet_config", "table_bad_cell", "table_bad_loop", "table_duplicate_id",
                     "table_empty", "table_empty_cells", "table_id_clash_with_glob", "table_jsonl_problems",
                     "table_missing_file", "table_missing_image_column", "table_row_width", "table_too_many_rows",
                     "table_unknown_column", "table_unknown_format"], "the files, tables or model it names"),
}
NOT_YAML = {"tab_indentation", "two_documents", "yaml_bad_indentation", "yaml_unclosed_bracket"}


def test_the_schema_refuses_every_golden_invalid_manifest_it_can_express():
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    refused, accepted, unparsed = [], [], []
    for path in sorted((REPO / "tests" / "invalid").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            unparsed.append(path.stem)
            continue
        (accepted if validator.is_valid(data) else refused).append(path.stem)
    assert sorted(unparsed) == sorted(NOT_YAML)
    assert accepted == sorted(NOT_IN_JSON_SCHEMA), "a case the schema accepts must say why it cannot refuse it"
    # What this round taught the schema, among them.
    assert {"repeated_format", "sweep_repeated_value", "id_reserved_index", "width_not_multiple_of_8",
            "output_dir_unbalanced_brace", "output_dir_unknown_placeholder", "overlap_with_offload"} <= set(refused)


def test_the_tightened_rules_refuse_no_manifest_svdflow_accepts(tmp_path):
    """Each rule added to the schema is as narrow as svdflow's: the near misses svdflow takes, the schema
    takes; and where the schema refuses, svdflow does too."""
    import jsonschema

    from svdflow.errors import ManifestError
    from svdflow.manifest import load_run_spec

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    write_image(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text("id,image,num_frames\nrow,a.png,4\n")
    item = {"id": "a", "image": "a.png"}

    def svdflow_accepts(manifest: dict) -> bool:
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump({"svdflow": 1, "model": {"source": "builtin:tiny"}, **manifest}))
        try:
            load_run_spec(path)
        except ManifestError:
            return False
        return True

    near_misses = (
        {"items": [{"id": "index", "image": "a.png", "sweep": {"seed": [1, 2]}}]},
        {"output": {"dir": "r/{name!s:>4}-{{x}}"}, "items": [item]},
        {"hardware": {"fp8": True, "profile": "low-vram", "offload": "none"}, "items": [item]},
        {"hardware": {"overlap_decode": True, "profile": "balanced"}, "items": [item]},
        {"defaults": {"loop": "crossfade", "num_frames": 2}, "items": [item]},
        {"defaults": {"loop": "crossfade", "num_frames": 1}, "items": [{**item, "num_frames": 4}]},
        {"items": [{**item, "loop": "crossfade", "num_frames": 1, "sweep": {"num_frames": [4, 8]}}]},
        {"items": [{"table": "t.csv", "loop": "crossfade", "num_frames": 1}]},
        {"items": [{**item, "sweep": {"seed": [1, 2], "noise_aug_strength": [0.1, 0.2]}}]})
    for manifest in near_misses:
        assert svdflow_accepts(manifest), manifest
        assert validator.is_valid({"svdflow": 1, "model": {"source": "builtin:tiny"}, **manifest}), manifest
    refused = (
        {"items": [{"id": "index", "image": "a.png"}]},
        {"output": {"formats": ["mp4", "gif", "mp4"]}, "items": [item]},
        {"items": [{**item, "sweep": {"seed": [1, 1]}}]},
        {"items": [{**item, "loop": "crossfade", "num_frames": 1, "segments": 3}]},
        {"output": {"dir": "r/{date}"}, "items": [item]},
        {"hardware": {"overlap_decode": True, "offload": "model"}, "items": [item]},
        {"defaults": {"height": 580}, "items": [item]})
    for manifest in refused:
        assert not svdflow_accepts(manifest), manifest
        assert not validator.is_valid({"svdflow": 1, "model": {"source": "builtin:tiny"}, **manifest}), manifest
