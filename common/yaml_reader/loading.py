"""Reading a YAML file safely: every way a file can be hostile ends in a :class:`FileError` naming the file (and
the line where there is one), never in a traceback, a hang or a blown-up memory.

* size: at most ``MAX_BYTES``; a larger file is refused before it is read whole (``/dev/zero`` included);
* YAML's safe loader only (no Python objects), refusing duplicate keys (PyYAML keeps the last one silently);
* nesting: at most ``MAX_DEPTH`` levels, counted through aliases (PyYAML would recurse until RecursionError);
* aliases: the document with every alias expanded holds at most ``MAX_NODES`` values (a "billion laughs" file is
  a few hundred bytes that expand to billions); an alias inside the node it names is refused;
* characters YAML does not allow (NUL, other control characters) are named with their line and column. A NUL
  written as the escape ``"\\0"`` is a valid YAML string: the typed readers refuse it per field.
"""

from __future__ import annotations

from typing import IO, Any

import yaml
from yaml.composer import ComposerError

from .problems import FileError

# PyYAML's pure-Python parser (kept for its error messages) reads about 130 KB/s and holds ~700 bytes per value:
# the limits keep the worst file to seconds and a few hundred MB. A billing_dump of 15,000 customers fits.
MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 50
MAX_NODES = 500_000


class _LimitError(ComposerError):
    """A limit of this reader, reported like PyYAML's own errors (with the line and column)."""

    def __init__(self, problem: str, node_or_mark: Any) -> None:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        super().__init__(None, None, problem, mark)


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing duplicate keys, nesting deeper than ``MAX_DEPTH`` and more than ``MAX_NODES``
    values (stopping there, before they are all in memory)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 0 if self.check_event(yaml.AliasEvent) else 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            if self._nodes > MAX_NODES:
                raise _LimitError(f"the file holds more than {MAX_NODES:,} values", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


class _Expansion:
    """The size and depth of a node graph with its aliases expanded, in time linear in the graph: a node that
    several aliases name is measured once (``sizes``) and counted at each place."""

    def __init__(self) -> None:
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) → (values, depth)
        self.open: set[int] = set()  # the nodes being measured: an alias to one of them is a cycle

    def measure(self, node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise _LimitError("an alias refers to the node that contains it", node)
        self.open.add(key)
        values, depth = 1, 0
        for child in _children(node):
            child_values, child_depth = self.measure(child)
            values, depth = values + child_values, max(depth, child_depth)
            if values > MAX_NODES:
                raise _LimitError(f"with its aliases expanded, the file holds more than {MAX_NODES:,} values", node)
        if depth + 1 > MAX_DEPTH:
            raise _LimitError(f"nested more than {MAX_DEPTH} levels deep (through aliases)", node)
        self.open.discard(key)
        self.sizes[key] = (values, depth + 1)
        return self.sizes[key]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _size(data: str | bytes) -> int:
    return len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "replace"))


def _too_large(filename: str, max_bytes: int) -> FileError:
    return FileError([f"{filename}: the file is larger than the limit of {max_bytes:,} bytes"])


def _line_and_column(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)  # rfind is -1 on the first line: column position + 1
    return f"line {line}, column {column}"


def _yaml_error(exc: yaml.YAMLError, text: str, filename: str) -> FileError:
    """PyYAML's error in one line: ``FILE: line 3, column 4: invalid YAML: …``."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return FileError([f"{filename}: {where}invalid YAML: {problem}"])
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        return FileError([f"{filename}: {_line_and_column(text, exc.position)}: invalid YAML: the character "
                          f"U+{exc.character:04X} is not allowed in YAML"])
    return FileError([f"{filename}: invalid YAML: {exc}"])


def _document(text: str) -> Any:
    loader = _Loader(text)  # reading the text checks its characters
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Expansion().measure(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(text: str, filename: str, *, max_bytes: int = MAX_BYTES) -> Any:
    """The document of ``text`` (None when empty), or FileError."""
    if _size(text) > max_bytes:
        raise _too_large(filename, max_bytes)
    try:
        return _document(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, filename) from exc


def load_mapping(text: str, filename: str, *, keys: tuple[str, ...], max_bytes: int = MAX_BYTES) -> dict:
    """A document that is a mapping of some of ``keys`` (an empty file is an empty mapping), or FileError."""
    document = load_yaml(text, filename, max_bytes=max_bytes)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise FileError([f"{filename}: the file must be a mapping with the keys {', '.join(keys)}"])
    unknown = [key for key in document if key not in keys]
    if unknown:
        raise FileError([f"{filename}: {key}: unknown top-level key (known: {', '.join(keys)})" for key in unknown])
    return document


def _read_at_most(stream: IO[Any], filename: str, max_bytes: int) -> str:
    data = stream.read(max_bytes + 1)
    if _size(data) > max_bytes:
        raise _too_large(filename, max_bytes)
    return data.decode("utf-8") if isinstance(data, bytes) else data


def read_source(file: str, stdin: IO[str], *, max_bytes: int = MAX_BYTES) -> tuple[str, str]:
    """The text of ``file`` (``-``: ``stdin``) and its name for messages; FileError when it cannot be read or
    is larger than ``max_bytes`` (then only ``max_bytes + 1`` bytes are read)."""
    filename = "<stdin>" if file == "-" else file
    try:
        if file == "-":
            return _read_at_most(getattr(stdin, "buffer", stdin), filename, max_bytes), filename
        with open(file, "rb") as handle:
            return _read_at_most(handle, filename, max_bytes), filename
    except FileNotFoundError:
        raise FileError([f"{file}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError([f"{file}: cannot read the file: {exc}"]) from exc
