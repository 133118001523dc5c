"""Reading params.yaml as DVC reads it, strictly.

UTF-8, at most MAX_BYTES, YAML 1.2 (as DVC's ruamel reads it: `1e-4` is a
number, `no` is text; see `_Loader`), no duplicate keys, anchors, aliases or
explicit tags, at most MAX_DEPTH levels. Every problem is one `ParamsError`
line naming the file and the line; every value in a message is printed short.
"""

from __future__ import annotations

import codecs
import re
import reprlib
from pathlib import Path

import yaml

MAX_BYTES = 1 << 16  # params.yaml is ~2 KiB; 64 KiB already takes PyYAML ~2 s to parse: a bigger one is a bomb
MAX_DEPTH = 16       # params.yaml needs 3 levels (section, key, list); deeper is a mistake (or a bomb)
MAX_DIGITS = 100     # a longer integer literal is out of every range (Python's int() refuses > 4300)


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or a value breaks its rule."""


# -- messages: every value printed short and on one line, in YAML's words ----------
class _YamlRepr(reprlib.Repr):
    """reprlib's short repr, with YAML's spellings where Python's differ: null, true, false, and
    a date as written (2024-01-01, which YAML reads as a date)."""

    def repr_NoneType(self, value, level) -> str:
        return "null"

    def repr_bool(self, value, level) -> str:
        return "true" if value else "false"

    def repr_float(self, value, level) -> str:
        if value != value:
            return ".nan"
        return {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, repr(value))

    def repr_date(self, value, level) -> str:
        return str(value)  # 2024-01-01, 2024-01-01 10:00:00

    repr_datetime = repr_date


_repr = _YamlRepr()
_repr.maxstring = _repr.maxother = _repr.maxlong = 60
_repr.maxlist = _repr.maxtuple = 8
_repr.maxdict = 4
_repr.maxlevel = 2


def show(value) -> str:
    """repr(value) cut to about 60 characters (a huge list or string prints briefly), with YAML's
    null, true and false."""
    return _repr.repr(value)


def show_key(key) -> str:
    """A key as messages print it: as written if it is short printable text with no space at
    either end, else its repr ('shift ', quoted, so that the space shows)."""
    text = str(key)
    plain = isinstance(key, str) and text.isprintable() and len(text) <= 60 and text == text.strip()
    return text if plain else show(key)


# -- reading: UTF-8, bounded, YAML 1.2 like DVC, strict ------------------------------
class _Refused(Exception):
    """Valid YAML that params.yaml may not use (its message names the line)."""


class _LongNumber:
    """An integer literal of more than MAX_DIGITS digits: it fails every rule and prints briefly."""

    def __init__(self, text: str) -> None:
        self.length = len(text)

    def __repr__(self) -> str:
        return f"a number {self.length} characters long"


_YAML11 = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading plain scalars as YAML 1.2 (as DVC's ruamel does),
    refusing duplicate keys, anchors, aliases and explicit tags, and bounding nesting.

    YAML 1.1 (PyYAML's default) and 1.2 (ruamel, so `dvc params diff`, `dvc exp show`)
    read some spellings differently: `1e-3` and `1E5` are strings in 1.1, floats in
    1.2; `010` is 8 in 1.1, 10 in 1.2; `0o10` a string in 1.1, 8 in 1.2; `1:30` 90 in
    1.1, a string in 1.2; `yes`, `no`, `on`, `off` booleans in 1.1, strings in 1.2. The
    bool/int/float rules below are ruamel's 1.2 ones, so a stage uses what DVC records.
    """

    # this class's own table: yaml.SafeLoader (and every other user of PyYAML) keeps YAML 1.1
    yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in rules if tag not in _YAML11]
                               for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._paths: dict[int, tuple] = {}

    def compose_document(self):
        """Refuse a %YAML 1.1 directive: DVC would then read the file as 1.1, the stage as 1.2."""
        event = self.peek_event()
        if getattr(event, "version", None) not in (None, (1, 2)):
            raise _Refused(f"line {event.start_mark.line + 1}: %YAML {'.'.join(map(str, event.version))}: "
                           "params.yaml is read as YAML 1.2; remove the directive")
        return super().compose_document()

    def compose_node(self, parent, index):
        """Refuse anchors, aliases (so an alias bomb never expands) and tags; bound the nesting."""
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            sign = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise _Refused(f"line {line}: {sign}{show_key(event.anchor)}: anchors and aliases are not allowed; "
                           "write each value out")
        if getattr(event, "tag", None) not in (None, "!"):
            tag = re.sub(r"^tag:yaml\.org,2002:", "!!", event.tag)
            raise _Refused(f"line {line}: tag {show_key(tag)}: tags are not allowed; write the plain value")
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"line {line}: nested more than {MAX_DEPTH} levels deep; "
                           "params.yaml holds sections of keys with numbers, strings or lists")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        self._paths = {id(node): ()}  # each mapping's dotted place, for the duplicate-key message
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        """Refuse a key given twice in one mapping (PyYAML keeps the last silently; DVC refuses)."""
        if isinstance(node, yaml.MappingNode):
            path = self._paths.get(id(node))
            lines: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` - merged keys may repeat
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = lines.get(key)
                except TypeError:  # an unhashable key: PyYAML reports it below
                    continue
                if first is not None:
                    kind = "section" if path == () else "key"
                    dotted = ".".join(show_key(k) for k in (*(path or ()), key))
                    where = f"lines {first} and {line}" if first != line else f"twice on line {line}"
                    raise _Refused(f"duplicate {kind} {dotted} ({where}); keep one")
                lines[key] = line
                if path is not None:
                    self._paths[id(value_node)] = (*path, key)
        return super().construct_mapping(node, deep=deep)

    def _not_a(self, what: str, node):
        return _Refused(f"line {node.start_mark.line + 1}: {show(node.value)} looks like {what} but is not "
                        "one; quote it if it is text")

    def construct_yaml12_int(self, node):
        """ruamel's YAML 1.2 integers: 0b, 0o, 0x prefixes, else decimal (`010` is 10)."""
        text = self.construct_scalar(node).replace("_", "")
        digits = text.lstrip("+-")
        if len(digits) > MAX_DIGITS:
            return _LongNumber(digits)
        base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
        try:
            value = int(digits[2:] if base != 10 else digits, base)
        except ValueError:  # e.g. `-_`, which the pattern allows
            raise self._not_a("an integer", node) from None
        return -value if text.startswith("-") else value

    def construct_yaml12_float(self, node):
        try:
            return super().construct_yaml_float(node)
        except ValueError:  # e.g. `._`, which the pattern allows
            raise self._not_a("a number", node) from None

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:  # e.g. 2024-13-45
            raise self._not_a("a date", node) from None


# ruamel's YAML 1.2 patterns (ruamel/yaml/resolver.py), the ones DVC reads params.yaml with
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"""^(?:
     [-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?[0-9_]+
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml12_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml12_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)

_BOMS = [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")]


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bom = next((name for mark, name in _BOMS if raw.startswith(mark)), None)
        line = raw.count(b"\n", 0, exc.start) + 1
        where = (f"it starts with a {bom} byte-order mark" if bom else
                 f"byte 0x{raw[exc.start]:02x} at offset {exc.start}, line {line}")
        raise ParamsError(f"{path}: not UTF-8 text ({where}); save it as UTF-8") from None


def _problem(exc: yaml.YAMLError, text: str) -> str:
    """A PyYAML error as 'line L, column C: problem', on one line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem or exc.context}"
    elif isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"line {text.count(chr(10), 0, exc.position) + 1}: character #x{char:04x} is not allowed in YAML"
    else:
        what = str(exc)
    what = " ".join(what.split())
    return what if len(what) <= 160 else what[:157] + "..."


def read(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_BYTES >> 10} KiB; a params file is a few KiB - "
                          "is it the right file?")
    text = _decode(raw, path)
    loader = None
    try:
        loader = _Loader(text)  # checks the characters
        data = loader.get_single_data()
    except _Refused as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({_problem(exc, text)})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: must be a mapping of sections (fetch, prepare, model, ...)")
    return data
