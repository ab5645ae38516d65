"""Read a manifest file into a validated `Manifest`, keeping where every key and value came from.

The YAML is built into plain data and its source map straight from the parser's events
(`svdflow.manifest.document`). Items are validated one at a time, and only as far as the manifest's
job limit is kept: a 64 MiB manifest (the size limit) of a million items is refused for its job
count in bounded memory, and one of a million broken items lists its first problems and counts the
rest, instead of building millions of messages.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from svdflow.collector import gc_paused
from svdflow.errors import MAX_SHOWN_PROBLEMS, ManifestError, Problem, in_file_order
from svdflow.manifest.document import Builder, Loader, Path_, SourceMap, dotted
from svdflow.manifest.limits import DEFAULT_MAX_JOBS, MAX_MANIFEST_BYTES, sweep_jobs
from svdflow.manifest.schema import (
    FORMAT_VERSION,
    INPUT_KEYS,
    ITEM_FORMS,
    GlobItem,
    Hardware,
    Item,
    ItemEntry,
    Manifest,
    ModelSource,
    Output,
    Sweep,
    TableItem,
)
from svdflow.manifest.schema import Defaults as DefaultsModel
from svdflow.quality.thresholds import QcThresholds

__all__ = ["LoadedManifest", "SourceMap", "load_manifest", "read_document", "validation_problems"]


@dataclass(frozen=True)
class ItemsCut:
    """Written entries past the one that took the job count over the limit: not validated into models
    (they cannot make the manifest valid), only counted, for the limit the problem suggests."""

    jobs: int  # the jobs of the written items after the cut, up to the first glob or table entry
    exact: bool  # no glob or table entry after the cut (whose count is unknown until it is read)


@dataclass
class LoadedManifest:
    """A validated manifest with what resolution needs: its location and its source positions."""

    path: Path
    manifest: Manifest
    source: SourceMap
    raw: dict[str, Any]
    cut: ItemsCut | None = None  # `manifest.items` ends where the job count went over the limit


def read_document(path: str | os.PathLike[str]) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML file into plain data, its source map and its duplicate keys (the first
    `document.MAX_DUPLICATES`; `source.more_duplicates` counts the rest).

    File and syntax problems raise: nothing after them can be trusted.
    """
    display = str(path)
    source = SourceMap(display)
    text = _read_text(Path(path), display)
    loader = Loader(text)
    try:
        with gc_paused():
            builder = Builder(loader, source)
            data, found = builder.document()
            if not found:
                what = "is empty" if not text.strip() else "holds only comments"
                raise ManifestError([Problem(display, None, None, f"the file {what}; a manifest needs at least "
                                                                  "`svdflow: 1` and a list of `items:`")])
    except yaml.YAMLError as exc:
        raise ManifestError([_yaml_problem(display, exc)]) from None
    except RecursionError:
        raise ManifestError([Problem(display, None, None, "is nested too deeply to be a manifest; "
                                                          "flatten it")]) from None
    finally:
        loader.dispose()
    source.more_duplicates = builder.more_problems
    return data, source, builder.problems


def load_manifest(path: str | os.PathLike[str]) -> LoadedManifest:
    """Read and validate a manifest; every problem in the file is reported at once (the first
    `MAX_SHOWN_PROBLEMS` of them, and how many more)."""
    with gc_paused():
        data, source, duplicates = read_document(path)
        if not isinstance(data, dict):
            kind = _yaml_kind(data)
            raise ManifestError([source.problem((), f"the top level is {kind}; a manifest is a mapping that "
                                                     "starts with `svdflow: 1` and lists `items:`")])
        problems = _Found(duplicates, source.more_duplicates)
        entries = data.get("items")
        cut = None
        if isinstance(entries, list) and entries:
            items, cut, written = _validate_items(entries, source, _job_limit(data), problems)
            head = {**data, "items": items if problems.empty else [_placeholder()]}
        else:
            head, written = data, []
        try:
            manifest = Manifest.model_validate(head)
        except ValidationError as exc:
            problems.add_all(validation_problems(exc, source))
            schema_failed = True
        else:
            schema_failed = not problems.empty and problems.schema
    if schema_failed:
        raise ManifestError(in_file_order(problems.kept), document=(written, source, _job_limit(data)),
                            more=problems.more)
    if not problems.empty:
        raise ManifestError(in_file_order(problems.kept), more=problems.more)
    return LoadedManifest(Path(path).resolve(), manifest, source, data, cut)


class _Found:
    """The problems found so far: the first MAX_SHOWN_PROBLEMS kept, the rest counted."""

    def __init__(self, duplicates: list[Problem], more: int):
        self.kept: list[Problem] = list(duplicates)
        self.more = more
        self.schema = False  # some of them are the schema's (not only duplicate keys)

    @property
    def empty(self) -> bool:
        return not self.kept and not self.more

    @property
    def full(self) -> bool:
        return len(self.kept) >= MAX_SHOWN_PROBLEMS

    def add_all(self, problems: list[Problem]) -> None:
        self.schema = self.schema or bool(problems)
        self.kept += problems


@cache
def _item_adapter() -> TypeAdapter:
    return TypeAdapter(ItemEntry)


@cache
def _placeholder() -> BaseModel:
    """An item that passes, standing in for the items while the rest of a manifest is checked."""
    return Item(id="placeholder", image="placeholder.png")


def _job_limit(data: dict[str, Any]) -> int:
    limit = data.get("max_jobs")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else DEFAULT_MAX_JOBS


def _validate_items(entries: list, source: SourceMap, limit: int, problems: _Found
                    ) -> tuple[list[BaseModel], ItemsCut | None, list[tuple[int, BaseModel]]]:
    """Each entry of `items:` validated on its own: (the models, up to the entry that takes the least
    job count past `limit`; the cut after it; the written items that passed, by index, for the id
    checks of a file that failed elsewhere). Past MAX_SHOWN_PROBLEMS problems, an entry's problems
    are counted without being worded."""
    adapter = _item_adapter()
    models: list[BaseModel] = []
    written: list[tuple[int, BaseModel]] = []
    jobs = 0  # the least the entries so far can make
    cut_at = None
    after_jobs, after_exact = 0, True
    for index, entry in enumerate(entries):
        try:
            model = adapter.validate_python(entry)
        except ValidationError as exc:
            if problems.full:
                problems.more += exc.error_count()
                problems.schema = True
            else:
                problems.add_all(validation_problems(exc, source, ("items", index)))
            continue
        is_written = isinstance(model, Item)
        if cut_at is not None:
            if after_exact and is_written:
                after_jobs += _entry_jobs(model)
            after_exact = after_exact and is_written
            continue
        models.append(model)
        if is_written:
            written.append((index, model))
        jobs += _entry_jobs(model) if is_written else 1  # a glob or table makes a job or a problem
        if jobs > limit:
            cut_at = index
    if cut_at is None or cut_at == len(entries) - 1:
        return models, None, written
    return models, ItemsCut(after_jobs, after_exact), written


def _entry_jobs(item: BaseModel) -> int:
    sweep = item.sweep
    return sweep_jobs({k: v for k, v in sweep.model_dump().items() if v is not None}) if sweep else 1


def _read_text(path: Path, display: str) -> str:
    def fail(message: str) -> ManifestError:
        return ManifestError([Problem(display, None, None, message)])

    if path.is_dir():
        raise fail("is a directory; pass a manifest file, e.g. manifests/campaign.yaml")
    try:
        with path.open("rb") as f:
            # One byte past the limit tells an oversize file from one at it, also where the size is
            # unknown (a pipe, /dev/zero) and without reading the rest.
            data = f.read(MAX_MANIFEST_BYTES + 1)
            if len(data) > MAX_MANIFEST_BYTES:
                size = os.fstat(f.fileno()).st_size
                known = f"{size:,} bytes, " if size > MAX_MANIFEST_BYTES else ""
                raise fail(f"is {known}over the {MAX_MANIFEST_BYTES:,}-byte limit for a manifest; list many "
                           "items in a table (table: items.csv) or match them with a glob instead of writing "
                           "each one out")
    except FileNotFoundError:
        raise fail("no such file; check the path") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror}); check its permissions") from None
    # NUL first: an image or archive passed by mistake is "binary", not "badly encoded text".
    if b"\x00" in data:
        raise fail("is a binary file, not YAML text; pass the manifest's .yaml file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[data.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8", "replace")) + 1
        raise ManifestError([Problem(display, line, col, f"byte 0x{data[exc.start]:02x} is not UTF-8; "
                                                         "save the file as UTF-8 text")]) from None


def _yaml_problem(display: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    # An unclosed bracket or quote is reported where parsing gave up; say where it was opened.
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context = f"{context} (started at line {context_mark.line + 1}, column {context_mark.column + 1})"
    what = " ".join(str(part) for part in (context, getattr(exc, "problem", None)) if part)
    what = what or str(exc).splitlines()[0]
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    if "expected a single document" in what:
        return Problem(display, line, col, "more than one YAML document (---); put the whole manifest in one document")
    if "tab" in what or "'\\t'" in what:
        fix = "replace the tab with spaces (YAML does not allow tabs in indentation)"
    elif "mapping values are not allowed" in what:
        fix = "quote values that contain ': ', or fix the indentation"
    else:
        fix = "fix the syntax (indentation, quotes, colons, brackets)"
    return Problem(display, line, col, f"invalid YAML: {what}; {fix}")


# Which model a mapping at a given path is, with list indexes written as "*".
_MODELS_BY_SHAPE: dict[Path_, type[BaseModel]] = {
    (): Manifest,
    ("model",): ModelSource,
    ("hardware",): Hardware,
    ("output",): Output,
    ("defaults",): DefaultsModel,
    ("items", "*"): Item,
    ("items", "*", "sweep"): Sweep,
    ("defaults", "qc"): QcThresholds,
    ("items", "*", "qc"): QcThresholds,
}

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys", "dict_type": "a mapping",
    "literal_error": None, "none_required": "null",
}



def validation_problems(exc: ValidationError, source: SourceMap, prefix: Path_ = ()) -> list[Problem]:
    """Turn Pydantic's errors into located, actionable problems, in file order; `prefix`: where the
    validated value is in the manifest (("items", 3) for an item validated on its own)."""
    problems = []
    for error in exc.errors(include_url=False):
        loc, form = _untag((*prefix, *error["loc"]))
        if error["type"] == "extra_forbidden":
            problems.append(source.problem(loc, _unknown_key(loc, form), at_key=True))
        else:
            problems.append(source.problem(loc, _describe(error, loc, form)))
    return in_file_order(problems)


def _untag(loc: Path_) -> tuple[Path_, type[BaseModel] | None]:
    """The location without the item form's tag Pydantic puts in it, and that form's model."""
    if len(loc) > 2 and loc[0] == "items" and loc[2] in ITEM_FORMS:
        return loc[:2] + loc[3:], ITEM_FORMS[loc[2]]
    return loc, None


def _model_at(loc: Path_, form: type[BaseModel] | None = None) -> type[BaseModel] | None:
    shape = tuple("*" if isinstance(p, int) else p for p in loc)
    if shape == ("items", "*"):
        return form or Item
    return _MODELS_BY_SHAPE.get(shape)


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """A model's keys, required ones first: for an item that is id and image, what people look for."""
    return sorted(model.model_fields, key=lambda f: not model.model_fields[f].is_required())


def suggest(key: str, allowed: list[str]) -> str:
    """What to do about an unknown key (or table column): the close name, and every allowed one."""
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    if not close:  # a shortened name: motion -> motion_bucket_id
        close = [name for name in allowed if str(key).lower() in name] if len(str(key)) >= 3 else []
    hint = f"did you mean '{close[0]}'?" if len(close) == 1 else "remove it or fix its spelling;"
    return f"{hint} allowed: {', '.join(allowed)}"


_FORM_WORDS = {Item: "an item written out (id and image)", GlobItem: "a glob entry", TableItem: "a table entry"}


def _unknown_key(loc: Path_, form: type[BaseModel] | None = None) -> str:
    key, parent = loc[-1], loc[:-1]
    model = _model_at(parent, form)
    where = f" in {dotted(parent)}" if parent else " at the top level"
    if model in _FORM_WORDS:
        if key in INPUT_KEYS:
            given = next(k for k in INPUT_KEYS if k in model.model_fields)
            return (f"'{key}' and '{given}' cannot both be on {dotted(parent)}: an item has one of image (one "
                    f"file), glob (the files a pattern matches) or table (one item per row); split it into two "
                    f"items")
        if key == "id" and model is GlobItem:
            return (f"'id' cannot be on a glob entry ({dotted(parent)}): each matched file's path gives its "
                    f"item's id; remove it (id_prefix puts a text before every id)")
        if key == "id" and model is TableItem:
            return (f"'id' cannot be on a table entry ({dotted(parent)}): the table's id column gives each "
                    f"row's id; remove it")
        if key == "id_prefix":
            return (f"'id_prefix' is for glob entries, not {_FORM_WORDS[model]} ({dotted(parent)}); remove it")
    return f"unknown key '{key}'{where}; {suggest(str(key), allowed_keys(model) if model else [])}"


def describe_error(error: dict[str, Any], loc: Path_, model: type[BaseModel]) -> str:
    """A Pydantic error about `loc` within `model` (a table row's cell, say) in the manifest's words."""
    return _describe(error, loc, model)


def _describe(error: dict[str, Any], loc: Path_, form: type[BaseModel] | None = None) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    name = dotted(loc)
    if loc == ("svdflow",):
        if kind == "missing":
            return f"missing required key 'svdflow'; add `svdflow: {FORMAT_VERSION}` at the top"
        return (f"svdflow: {_show(value)} is not a format version this svdflow reads; "
                f"write `svdflow: {FORMAT_VERSION}` or upgrade svdflow")
    if kind == "missing":
        if loc == ("items",):
            return "missing required key 'items'; add `items:` with at least one `- id: ...` and its `image: ...`"
        parent = dotted(loc[:-1]) or "the top level"
        if loc[-1] == "image" and loc[:1] == ("items",):
            return (f"{parent}: missing required key 'image'; add `image: <local path or URL>` (or, for many "
                    "items, `glob: <pattern>` or `table: <file>` instead of id and image)")
        example = {"id": "id: <name>"}.get(str(loc[-1]))
        return f"{parent}: missing required key '{loc[-1]}'; add " + (f"`{example}`" if example else "it")
    if kind == "literal_error":
        return f"{name}: {_show(value)} is not one of {ctx['expected']}; use one of those"
    if kind in _TYPE_WORDS:
        got = _show(value)
        got = got if got == _yaml_kind(value) else f"{got} ({_yaml_kind(value)})"
        return f"{name}: expected {_TYPE_WORDS[kind]}, got {got}; {_type_fix(kind, value, loc, form)}"
    if kind == "string_pattern_mismatch":
        if loc == ("hardware", "device"):
            return f"{name}: {_show(value)} is not a device; use auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps"
        what = "name" if loc == ("name",) else "id"
        fixed = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("._-")
        example = f", e.g. '{fixed}'" if fixed else ""
        return (f"{name}: {_show(value)} is not a valid {what}; use letters, digits, '.', '_' and '-', "
                f"starting with a letter or digit{example}")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()))
        words = {"greater_than_equal": "at least", "greater_than": "greater than",
                 "less_than_equal": "at most", "less_than": "less than"}[kind]
        return f"{name}: {_show(value)} is out of range; use a value {words} {bound}"
    if kind == "string_too_short":
        if loc[-1] == "image":
            return f"{name}: is empty; give the image's local path (relative to the manifest's folder) or URL"
        return f"{name}: is empty; give a value, or remove the key"
    if kind == "string_too_long":
        return f"{name}: too long ({len(value)} characters); use at most {ctx.get('max_length')}"
    if kind == "too_short":
        if loc == ("items",):
            return "items: the list is empty; add at least one item (`- id: ...` and its `image: ...`)"
        if "sweep" in loc:
            return f"{name}: the list is empty; list at least one value, or remove the key"
        return f"{name}: the list is empty; list at least {ctx.get('min_length', 1)} entry"
    if kind == "too_long":
        return f"{name}: too many entries ({len(value)}); list at most {ctx.get('max_length')}"
    if kind == "value_error":
        return f"{name}: {ctx['error']}"
    return f"{name}: {error['msg']}, got {_show(value)}"


def _type_fix(kind: str, value: Any, loc: Path_, form: type[BaseModel] | None = None) -> str:
    """What to write instead of a value of the wrong type."""
    if value is None:  # `key:` with nothing after the colon
        model = _model_at(loc[:-1], form)
        field_info = model.model_fields.get(str(loc[-1])) if model else None
        optional = field_info is not None and not field_info.is_required()
        return "write a value after the colon" + (", or remove the key to use the default" if optional else "")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if loc == ("model",) and isinstance(value, str):
            return f"write `source: {value}` on the next line, indented under `model:`"
        if len(loc) == 2 and loc[0] == "items":
            return "each item is a mapping: `- id: <name>` and, indented below it, `image: <path or URL>`"
        if isinstance(value, list):
            return "write `key: value` lines indented under it, without '- '"
        return "write `key: value` lines indented under it"
    if kind == "list_type":
        if isinstance(value, dict):
            return "start each entry on its own line with '- '"
        return f"write a list, e.g. [{_show(value).strip(chr(39))}]"
    if kind == "string_type":
        if isinstance(value, bool):
            return "YAML reads yes/no/on/off/true/false as booleans; quote it if you meant text"
        if not isinstance(value, (dict, list)):
            return f"quote it if you meant text: '{value}'"
        return "write a single value"
    # A number or boolean was expected.
    wanted = {"bool_type": bool, "float_type": (int, float), "float_parsing": (int, float)}.get(kind, int)
    if isinstance(value, str) and len(value) < 64:
        try:
            unquoted = yaml.safe_load(value)
        except yaml.YAMLError:
            unquoted = None
        if isinstance(unquoted, wanted) and (wanted is bool or not isinstance(unquoted, bool)):
            return "remove the quotes"
    return f"write {_TYPE_WORDS[kind]}"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _yaml_kind(value)
    return repr(value) if isinstance(value, str) else str(value)


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
