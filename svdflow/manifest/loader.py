"""Read a manifest file into a validated `Manifest`, keeping where every key and value came from.

PyYAML's constructor throws positions away and silently keeps the last of duplicate keys, so the
document is composed into nodes first (libyaml when available: it is ~10x faster on big
manifests), then built into data in one walk that records every position by path and reports
duplicate keys (`_Builder`).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from svdflow.errors import ManifestError, Problem, in_file_order
from svdflow.manifest.limits import MAX_MANIFEST_BYTES
from svdflow.manifest.schema import (
    FORMAT_VERSION,
    INPUT_KEYS,
    ITEM_FORMS,
    GlobItem,
    Hardware,
    Item,
    Manifest,
    ModelSource,
    Output,
    Sweep,
    TableItem,
)
from svdflow.manifest.schema import Defaults as DefaultsModel

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG, _INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
# Scalars that Python's int()/float() read exactly as YAML 1.1 does; the rest (0x1f, 1_000, .inf,
# octal 017, sexagesimal 1:30, booleans, null, timestamps) go through PyYAML's constructor.
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_PLAIN_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?\Z")
Path_ = tuple[Any, ...]
_TAG_CACHE: dict[str, str] = {}


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader, with plain-scalar tag resolution memoised (keys and values repeat a lot)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _TAG_CACHE.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_TAG_CACHE) < 100_000:
                    _TAG_CACHE[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


@dataclass
class SourceMap:
    """Line and column (1-based) of every key and value in a manifest, by path ('items', 0, 'id')."""

    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def problem(self, path: Path_, message: str, *, at_key: bool = False) -> Problem:
        """A problem located at `path`, or at its nearest ancestor that is in the file."""
        table = self.keys if at_key and path in self.keys else self.values
        while path and path not in table:
            path = path[:-1]
            table = self.values
        line, col = table.get(path, (None, None))
        return Problem(self.file, line, col, message)


@dataclass
class LoadedManifest:
    """A validated manifest with what resolution needs: its location and its source positions."""

    path: Path
    manifest: Manifest
    source: SourceMap
    raw: dict[str, Any]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    A 10,000-item manifest makes ~10^5 nodes, dicts and models; each batch of new containers
    triggers a collection that walks all the survivors again, which made loading 2-3x slower.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_document(path: str | os.PathLike[str]) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML file into plain data, its source map and its duplicate keys.

    File and syntax problems raise: nothing after them can be trusted.
    """
    display = str(path)
    source = SourceMap(display)
    text = _read_text(Path(path), display)
    loader = _Loader(text)
    try:
        with gc_paused():
            root = loader.get_single_node()
            if root is None:
                what = "is empty" if not text.strip() else "holds only comments"
                raise ManifestError([Problem(display, None, None, f"the file {what}; a manifest needs at least "
                                                                  "`svdflow: 1` and a list of `items:`")])
            builder = _Builder(loader, source)
            data = builder.build(root, ())
            problems = builder.problems
    except yaml.YAMLError as exc:
        raise ManifestError([_yaml_problem(display, exc)]) from None
    except RecursionError:
        raise ManifestError([Problem(display, None, None, "is nested too deeply to be a manifest; "
                                                          "flatten it")]) from None
    finally:
        loader.dispose()
    return data, source, problems


def load_manifest(path: str | os.PathLike[str]) -> LoadedManifest:
    """Read and validate a manifest; every problem in the file is reported at once."""
    with gc_paused():
        data, source, duplicates = read_document(path)
        if not isinstance(data, dict):
            kind = _yaml_kind(data)
            raise ManifestError([source.problem((), f"the top level is {kind}; a manifest is a mapping that "
                                                     "starts with `svdflow: 1` and lists `items:`")])
        try:
            manifest = Manifest.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(in_file_order(duplicates + validation_problems(exc, source)),
                                document=(data, source)) from None
    if duplicates:
        raise ManifestError(duplicates)
    return LoadedManifest(Path(path).resolve(), manifest, source, data)


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


class _Builder:
    """Builds the data and its source map in one walk over the composed nodes.

    Plain maps, lists and scalars (all a manifest needs) are built here, ~3x faster than indexing
    the nodes and then running PyYAML's constructor over them again; anything else (merge keys,
    explicit tags like !!set) is handed to PyYAML's constructor. Duplicate keys are reported and
    the first one is kept, so values and positions always agree.
    """

    def __init__(self, loader: Any, source: SourceMap):
        self.loader = loader
        self.source = source
        self.problems: list[Problem] = []
        # An alias is the same node again: build it once (no exponential "billion laughs").
        self.built: dict[int, Any] = {}
        self.building: set[int] = set()

    def build(self, node: yaml.Node, path: Path_) -> Any:
        mark = node.start_mark
        self.source.values[path] = (mark.line + 1, mark.column + 1)
        cls = node.__class__
        if cls is yaml.ScalarNode:
            return self._scalar(node)
        key = id(node)
        if key in self.built:
            return self.built[key]
        if key in self.building:
            raise ManifestError([Problem(self.source.file, mark.line + 1, mark.column + 1,
                                         "the value anchored here (&name) contains an alias to itself "
                                         "(*name); remove that alias, aliases must not be recursive")])
        self.building.add(key)
        if cls is yaml.SequenceNode and node.tag == _SEQ_TAG:
            value = [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        elif cls is yaml.MappingNode and node.tag == _MAP_TAG and all(
                k.__class__ is yaml.ScalarNode and k.tag != _MERGE_TAG for k, _ in node.value):
            value = self._mapping(node, path)
        else:
            _index(node, path, self.loader, self.source, self.problems, set())
            value = self.loader.construct_object(node, deep=True)
        self.building.discard(key)
        self.built[key] = value
        return value

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag == _STR_TAG:
            return value
        if tag == _INT_TAG and _PLAIN_INT.match(value):
            return int(value)
        if tag == _FLOAT_TAG and _PLAIN_FLOAT.match(value):
            return float(value)
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in first_line:
                self.problems.append(self._duplicate(path, key, line, col, first_line[key]))
                continue
            first_line[key] = line
            self.source.keys[(*path, key)] = (line, col)
            out[key] = self.build(value_node, (*path, key))
        return out

    def _duplicate(self, path: Path_, key: Any, line: int, col: int, first: int) -> Problem:
        where = f"{_dotted(path)}." if path else ""
        return Problem(self.source.file, line, col,
                       f"duplicate key '{where}{key}' (first set on line {first}); keep one of them")


def _index(node: yaml.Node, path: Path_, loader: Any, source: SourceMap, problems: list[Problem],
           seen_nodes: set[int]) -> None:
    """Record positions under `path` and report duplicate keys, for nodes PyYAML's constructor builds."""
    source.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if id(node) in seen_nodes:  # an alias: indexed where its anchor is
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or not isinstance(key, (str, int, float, bool)):
                continue
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = f"{_dotted(path)}." if path else ""
                problems.append(Problem(source.file, line, key_node.start_mark.column + 1,
                                        f"duplicate key '{where}{key}' (first set on line {seen[key]}); "
                                        "keep one of them"))
                continue
            seen[key] = line
            source.keys[child] = (line, key_node.start_mark.column + 1)
            _index(value_node, child, loader, source, problems, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, value_node in enumerate(node.value):
            _index(value_node, (*path, i), loader, source, problems, seen_nodes)


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
}

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys", "dict_type": "a mapping",
    "literal_error": None, "none_required": "null",
}



def validation_problems(exc: ValidationError, source: SourceMap) -> list[Problem]:
    """Turn Pydantic's errors into located, actionable problems, in file order."""
    problems = []
    for error in exc.errors(include_url=False):
        loc, form = _untag(tuple(error["loc"]))
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
    where = f" in {_dotted(parent)}" if parent else " at the top level"
    if model in _FORM_WORDS:
        if key in INPUT_KEYS:
            given = next(k for k in INPUT_KEYS if k in model.model_fields)
            return (f"'{key}' and '{given}' cannot both be on {_dotted(parent)}: an item has one of image (one "
                    f"file), glob (the files a pattern matches) or table (one item per row); split it into two "
                    f"items")
        if key == "id" and model is GlobItem:
            return (f"'id' cannot be on a glob entry ({_dotted(parent)}): each matched file's path gives its "
                    f"item's id; remove it (id_prefix puts a text before every id)")
        if key == "id" and model is TableItem:
            return (f"'id' cannot be on a table entry ({_dotted(parent)}): the table's id column gives each "
                    f"row's id; remove it")
        if key == "id_prefix":
            return (f"'id_prefix' is for glob entries, not {_FORM_WORDS[model]} ({_dotted(parent)}); remove it")
    return f"unknown key '{key}'{where}; {suggest(str(key), allowed_keys(model) if model else [])}"


def describe_error(error: dict[str, Any], loc: Path_, model: type[BaseModel]) -> str:
    """A Pydantic error about `loc` within `model` (a table row's cell, say) in the manifest's words."""
    return _describe(error, loc, model)


def _describe(error: dict[str, Any], loc: Path_, form: type[BaseModel] | None = None) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    name = _dotted(loc)
    if loc == ("svdflow",):
        if kind == "missing":
            return f"missing required key 'svdflow'; add `svdflow: {FORMAT_VERSION}` at the top"
        return (f"svdflow: {_show(value)} is not a format version this svdflow reads; "
                f"write `svdflow: {FORMAT_VERSION}` or upgrade svdflow")
    if kind == "missing":
        if loc == ("items",):
            return "missing required key 'items'; add `items:` with at least one `- id: ...` and its `image: ...`"
        parent = _dotted(loc[:-1]) or "the top level"
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


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
