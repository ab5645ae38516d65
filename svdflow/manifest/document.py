"""A YAML document built straight from the parser's events into plain data, with where every key
and value came from (`SourceMap`).

PyYAML's constructor throws positions away and silently keeps the last of duplicate keys; composing
the document into nodes first keeps them, but a node and its two marks cost ~0.8 KB per scalar: a
64 MiB manifest (the size limit) became 6 GB of nodes. Here nothing is kept of an event once its
value is built, and positions are packed into arrays beside the data, ~200 bytes per item.

What a manifest needs (maps, lists, plain and quoted scalars, anchors and aliases, merge keys) is
built here as PyYAML would build it; a collection with an explicit tag (`!!set`, `!!omap`) is
composed into nodes and handed to PyYAML's constructor. Duplicate keys are reported and the first
one is kept, so values and positions always agree. An alias is the value it refers to, built once
(no exponential "billion laughs").
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError

from svdflow.errors import ManifestError, Problem

try:
    from yaml._yaml import CParser as _Parser  # libyaml: ~10x faster on big manifests
except ImportError:  # pragma: no cover (a PyYAML built without libyaml)
    from yaml.parser import Parser as _Parser  # type: ignore[assignment]
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _Parser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)

_MERGE_TAG, _VALUE_TAG = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"
_STR_TAG, _INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
# Scalars that Python's int()/float() read exactly as YAML 1.1 does; the rest (0x1f, 1_000, .inf,
# octal 017, sexagesimal 1:30, booleans, null, timestamps) go through PyYAML's constructor.
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_PLAIN_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?\Z")
Path_ = tuple[Any, ...]
# Past this many duplicate keys the rest are counted: a million of them need one fix.
MAX_DUPLICATES = 100
_TAG_CACHE: dict[str, str] = {}
_STRINGS_CACHED = 100_000
_BUILDING = object()


class Loader(_Parser, Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
    """libyaml's parser with PyYAML's safe constructor and resolver; plain-scalar tag resolution
    memoised (keys and values repeat a lot)."""

    def __init__(self, stream: str):
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _TAG_CACHE.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_TAG_CACHE) < _STRINGS_CACHED:
                    _TAG_CACHE[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


def _pack(mark: Any) -> int:
    return (mark.line + 1) << 32 | (mark.column + 1)


def _unpack(packed: int) -> tuple[int, int]:
    return packed >> 32, packed & 0xFFFFFFFF


class _Spots:
    """Where the entries of one mapping or list are: `marks` holds packed (line, column) positions,
    a key's and its value's for a mapping, a value's for a list; `keys` the mapping's keys in order
    (None for a list); `children` the spots of entries that are mappings or lists (None when none is)."""

    __slots__ = ("children", "keys", "marks")

    def __init__(self, keys: tuple | dict | None, marks: array, children: list | None):
        self.keys, self.marks, self.children = keys, marks, children

    def find(self, part: Any) -> int | None:
        """The entry `part` (a key, or a list index) is, or None."""
        keys = self.keys
        if keys is None:
            if isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(self.marks):
                return part
            return None
        if isinstance(keys, dict):
            return keys.get(part)
        try:
            return keys.index(part)
        except ValueError:
            return None

    def value_mark(self, entry: int) -> int:
        return self.marks[2 * entry + 1] if self.keys is not None else self.marks[entry]

    def key_mark(self, entry: int) -> int | None:
        return self.marks[2 * entry] if self.keys is not None else None

    def child(self, entry: int) -> _Spots | None:
        return self.children[entry] if self.children is not None else None


def _spots(keys: list | None, marks: array, children: list | None) -> _Spots:
    if keys is not None:
        # A tuple is the smallest; a mapping of many keys (a hostile one) is looked up by hash.
        return _Spots(tuple(keys) if len(keys) <= 32 else {k: i for i, k in enumerate(keys)}, marks, children)
    return _Spots(None, marks, children)


class _Positions:
    """`SourceMap.values` or `.keys`: (line, column) by path, read from the packed spots."""

    def __init__(self, source: SourceMap, at_key: bool):
        self.source, self.at_key = source, at_key

    def get(self, path: Path_, default: Any = None) -> tuple[int, int] | Any:
        found, value, key = self.source.walk(path)
        mark = key if self.at_key else value
        return default if found != len(path) or mark is None else _unpack(mark)

    def __getitem__(self, path: Path_) -> tuple[int, int]:
        position = self.get(path)
        if position is None:
            raise KeyError(path)
        return position

    def __contains__(self, path: Path_) -> bool:
        return self.get(path) is not None


@dataclass
class SourceMap:
    """Line and column (1-based) of every key and value in a manifest, by path ('items', 0, 'id')."""

    file: str
    root_mark: int | None = None
    root: _Spots | None = None
    more_duplicates: int = 0  # duplicate keys past the first MAX_DUPLICATES, counted
    values: _Positions = field(init=False, repr=False)
    keys: _Positions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.values, self.keys = _Positions(self, False), _Positions(self, True)

    def walk(self, path: Path_) -> tuple[int, int | None, int | None]:
        """(how many parts of `path` are in the file, the value mark and the key mark of the last of
        them; the root's value mark when none is)."""
        value, key = self.root_mark, None
        spots = self.root
        found = 0
        for part in path:
            entry = spots.find(part) if spots is not None else None
            if entry is None:
                break
            found += 1
            if spots.keys is not None:
                key, value = spots.marks[2 * entry], spots.marks[2 * entry + 1]
            else:
                key, value = None, spots.marks[entry]
            spots = spots.children[entry] if spots.children is not None else None
        return found, value, key

    def problem(self, path: Path_, message: str, *, at_key: bool = False) -> Problem:
        """A problem located at `path` (its key, with `at_key`), or at its nearest ancestor in the file."""
        found, value, key = self.walk(path)
        mark = key if at_key and key is not None and found == len(path) else value
        line, col = _unpack(mark) if mark is not None else (None, None)
        return Problem(self.file, line, col, message)


class Builder:
    """Builds a document's data and its source map from the parser's events, one at a time."""

    def __init__(self, loader: Loader, source: SourceMap):
        self.loader = loader
        self.source = source
        self.problems: list[Problem] = []  # duplicate keys, the first MAX_DUPLICATES
        self.more_problems = 0
        self.anchors: dict[str, tuple[Any, int, _Spots | None]] = {}  # value (or _BUILDING), mark, spots
        self._strings: dict[str, str] = {}

    def document(self) -> tuple[Any, bool]:
        """(the data, whether the stream held a document at all)."""
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None, False
        start = loader.get_event()  # DocumentStart
        data, mark, spots = self.node(())
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            raise ComposerError("expected a single document in the stream", start.start_mark,
                                "but found another document", loader.get_event().start_mark)
        self.source.root_mark, self.source.root = mark, spots
        return data, True

    def node(self, path: Path_) -> tuple[Any, int, _Spots | None]:
        """The next node's (value, packed position, spots); `path` names it in duplicate-key problems."""
        loader = self.loader
        event = loader.peek_event()
        cls = event.__class__
        if cls is yaml.ScalarEvent:
            loader.get_event()
            value = self._scalar(self._tag(event), event)
            if event.anchor is not None:
                self._anchor(event, (value, _pack(event.start_mark), None))
            return value, _pack(event.start_mark), None
        if cls is yaml.AliasEvent:
            loader.get_event()
            return self._alias(event)
        if cls not in (yaml.MappingStartEvent, yaml.SequenceStartEvent):
            raise ComposerError(None, None, f"expected a node, but found {event.__class__.__name__}", event.start_mark)
        mapping = cls is yaml.MappingStartEvent
        tag = event.tag
        if tag is not None and tag != "!" and tag != (_MAP_TAG if mapping else _SEQ_TAG):
            return self._tagged(event)
        loader.get_event()
        mark = _pack(event.start_mark)
        if event.anchor is not None:
            self._anchor(event, (_BUILDING, mark, None))
        value, spots = self._mapping(event, path) if mapping else self._sequence(path)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, mark, spots)
        return value, mark, spots

    def _tag(self, event: yaml.ScalarEvent) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        return tag

    def _scalar(self, tag: str, event: yaml.ScalarEvent) -> Any:
        value = event.value
        if tag == _STR_TAG:
            cached = self._strings.get(value)
            if cached is None:
                if len(self._strings) < _STRINGS_CACHED:
                    self._strings[value] = value
                return value
            return cached
        if tag == _INT_TAG and _PLAIN_INT.match(value):
            return int(value)
        if tag == _FLOAT_TAG and _PLAIN_FLOAT.match(value):
            return float(value)
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
        constructor = self.loader.yaml_constructors.get(tag)
        if constructor is None:  # an unknown tag: PyYAML's constructor says so
            return self.loader.construct_object(node)
        return constructor(self.loader, node)

    def _anchor(self, event: Any, entry: tuple[Any, int, _Spots | None]) -> None:
        if event.anchor in self.anchors or event.anchor in self.loader.anchors:
            first = self.anchors.get(event.anchor)
            raise ComposerError(f"found duplicate anchor {event.anchor!r}; first occurrence",
                                _mark(first[1]) if first else None, "second occurrence", event.start_mark)
        self.anchors[event.anchor] = entry

    def _alias(self, event: yaml.AliasEvent) -> tuple[Any, int, _Spots | None]:
        anchored = self.anchors.get(event.anchor)
        if anchored is None:
            node = self.loader.anchors.get(event.anchor)  # anchored inside a tagged collection
            if node is None:
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
            return self.loader.construct_object(node, deep=True), _pack(event.start_mark), None
        value, mark, spots = anchored
        if value is _BUILDING:
            line, col = _unpack(mark)
            raise ManifestError([Problem(self.source.file, line, col,
                                         "the value anchored here (&name) contains an alias to itself "
                                         "(*name); remove that alias, aliases must not be recursive")])
        return value, _pack(event.start_mark), spots

    def _tagged(self, event: Any) -> tuple[Any, int, _Spots | None]:
        """A collection with an explicit tag (!!set, !!omap, ...): PyYAML composes and builds it."""
        node = self.loader.compose_node(None, None)
        return self.loader.construct_object(node, deep=True), _pack(event.start_mark), None

    def _sequence(self, path: Path_) -> tuple[list, _Spots]:
        loader = self.loader
        out: list[Any] = []
        marks = array("q")
        children: list | None = None
        while not loader.check_event(yaml.SequenceEndEvent):
            value, mark, spots = self.node((*path, len(out)))
            if spots is not None:
                if children is None:
                    children = [None] * len(out)
                children.append(spots)
            elif children is not None:
                children.append(None)
            out.append(value)
            marks.append(mark)
        loader.get_event()
        return out, _spots(None, marks, children)

    def _mapping(self, start: yaml.MappingStartEvent, path: Path_) -> tuple[dict, _Spots]:
        loader = self.loader
        out: dict[Any, Any] = {}
        keys: list[Any] = []
        marks = array("q")  # key, value, key, value...
        children: list | None = None
        merged: list[tuple[Any, Any, int, int, _Spots | None]] = []
        while not loader.check_event(yaml.MappingEndEvent):
            event = loader.peek_event()
            if event.__class__ is yaml.ScalarEvent:
                loader.get_event()
                tag = self._tag(event)
                key_mark = _pack(event.start_mark)
                if tag == _MERGE_TAG:
                    merged.extend(self._merge(start, self.node((*path, "<<"))))
                    continue
                key = self._scalar(_STR_TAG if tag == _VALUE_TAG else tag, event)
            else:
                key, key_mark, _ = self.node(path)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError("while constructing a mapping", start.start_mark, "found unhashable key",
                                           _mark(key_mark)) from None
            value, value_mark, spots = self.node((*path, key))
            if key in out:
                self._duplicate(path, key, key_mark, marks[2 * keys.index(key)])
                continue
            out[key] = value
            keys.append(key)
            marks.append(key_mark)
            marks.append(value_mark)
            if spots is not None:
                if children is None:
                    children = [None] * (len(keys) - 1)
                children.append(spots)
            elif children is not None:
                children.append(None)
        loader.get_event()
        if merged:
            return self._merged(merged, out, keys, marks, children)
        return out, _spots(keys, marks, children)

    @staticmethod
    def _merged(merged: list, out: dict, keys: list, marks: array, children: list | None) -> tuple[dict, _Spots]:
        """As PyYAML merges: the merged keys first (later ones winning), then the mapping's own."""
        entries: dict[Any, tuple[Any, int, int, _Spots | None]] = {}
        for key, *rest in merged:
            entries[key] = (*rest,)
        for i, key in enumerate(keys):
            entries[key] = (out[key], marks[2 * i], marks[2 * i + 1], children[i] if children is not None else None)
        marks = array("q")
        for _, key_mark, value_mark, _ in entries.values():
            marks.append(key_mark)
            marks.append(value_mark)
        found = [entry[3] for entry in entries.values()]
        return ({key: entry[0] for key, entry in entries.items()},
                _spots(list(entries), marks, found if any(c is not None for c in found) else None))

    def _merge(self, start: Any, built: tuple[Any, int, _Spots | None]) -> list[tuple[Any, Any, int, int, Any]]:
        """The (key, value, key mark, value mark, spots) a merge key (`<<: *base`) brings in."""
        value, mark, spots = built
        if isinstance(value, dict):
            return _pairs(value, spots, mark)
        if not isinstance(value, list):
            raise ConstructorError("while constructing a mapping", start.start_mark,
                                   f"expected a mapping or list of mappings for merging, but found {_node_id(value)}",
                                   _mark(mark))
        out: list[tuple[Any, Any, int, int, Any]] = []
        for i in reversed(range(len(value))):  # the first mapping listed wins
            if not isinstance(value[i], dict):
                raise ConstructorError("while constructing a mapping", start.start_mark,
                                       f"expected a mapping for merging, but found {_node_id(value[i])}",
                                       _mark(spots.value_mark(i) if spots is not None else mark))
            out += _pairs(value[i], spots.child(i) if spots is not None else None,
                          spots.value_mark(i) if spots is not None else mark)
        return out

    def _duplicate(self, path: Path_, key: Any, key_mark: int, first_mark: int) -> None:
        if len(self.problems) >= MAX_DUPLICATES:
            self.more_problems += 1
            return
        where = f"{dotted(path)}." if path else ""
        line, col = _unpack(key_mark)
        self.problems.append(Problem(self.source.file, line, col, f"duplicate key '{where}{key}' (first set on line "
                                                                  f"{_unpack(first_mark)[0]}); keep one of them"))


def _pairs(mapping: dict, spots: _Spots | None, mark: int) -> list[tuple[Any, Any, int, int, Any]]:
    """A merged mapping's entries, where they were written (`mark`, the mapping's, when unknown)."""
    out = []
    for i, (key, value) in enumerate(mapping.items()):
        if spots is not None and spots.keys is not None:
            out.append((key, value, spots.key_mark(i), spots.value_mark(i), spots.child(i)))
        else:  # built by PyYAML (a tagged mapping): no positions inside
            out.append((key, value, mark, mark, None))
    return out


def _node_id(value: Any) -> str:
    return "mapping" if isinstance(value, dict) else "sequence" if isinstance(value, list) else "scalar"


def _mark(packed: int) -> yaml.Mark:
    line, col = _unpack(packed)
    return yaml.Mark("<manifest>", 0, line - 1, col - 1, None, None)


def dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
