"""The shared YAML reader (``common.yaml_reader``) on its own: hostile files end in a named FileError with the
file and the line, typed fields name the entry and the field, and one type-name helper serves YAML and JSON."""

from __future__ import annotations

import datetime as dt
import io
import time
from decimal import Decimal

import pytest

from common.type_names import json_type_name, type_name
from common.yaml_reader.display import changed_fields, changes_text, diff_values, show, without_empty
from common.yaml_reader.loading import MAX_BYTES, MAX_DEPTH, load_mapping, load_yaml, read_source
from common.yaml_reader.problems import FileError, Problems
from common.yaml_reader.reader import Reader, check_duplicates, parse_entries
from common.yaml_reader.values import MISSING, to_decimal
from tests.common.hostile_yaml import alias_bomb


def problems_of(text: str) -> list[str]:
    with pytest.raises(FileError) as info:
        load_yaml(text, "f.yaml")
    return info.value.problems


# ------------------------------------------------------------------------------------------------- hostile YAML


def test_an_alias_bomb_is_refused_quickly_with_its_line():
    started = time.monotonic()
    assert problems_of(alias_bomb()) == [
        "f.yaml: line 6, column 5: invalid YAML: with its aliases expanded, the file holds more than 500,000 values"
    ]
    assert time.monotonic() - started < 5


def test_too_many_values_stop_the_parser_before_they_are_all_in_memory(monkeypatch):
    monkeypatch.setattr("common.yaml_reader.loading.MAX_NODES", 10)
    assert problems_of("a:\n" + "- x\n" * 20) == [
        "f.yaml: line 9, column 3: invalid YAML: the file holds more than 10 values"]  # the 11th: map, a, list, 8 x
    assert load_yaml("a: &a [1, 2]\nb: *a\n", "f.yaml") == {"a": [1, 2], "b": [1, 2]}  # 7 values with the alias
    assert problems_of("a: &a [1, 2, 3]\nb: *a\nc: *a\n") == [
        "f.yaml: line 1, column 1: invalid YAML: with its aliases expanded, the file holds more than 10 values"]


def test_a_few_aliases_are_still_yaml():
    document = load_yaml("base: &p {type: unit, unit_amount: '1'}\nplans: [{price: *p}, {price: {<<: *p, x: 2}}]\n",
                         "f.yaml")
    assert document["plans"] == [{"price": {"type": "unit", "unit_amount": "1"}},
                                 {"price": {"type": "unit", "unit_amount": "1", "x": 2}}]


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n"])
def test_an_alias_inside_the_node_it_names_is_refused(text):
    assert problems_of(text) == ["f.yaml: line 1, column 4: invalid YAML: an alias refers to the node that contains it"]


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",  # flow style
    "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "end\n",  # block style
])
def test_deep_nesting_is_a_named_error_not_a_recursion_error(text):
    (problem,) = problems_of(text)
    assert problem.startswith("f.yaml: line ")
    assert problem.endswith(f"invalid YAML: nested more than {MAX_DEPTH} levels deep")


def test_nesting_through_aliases_counts_the_expanded_depth():
    lines = ["a0: &a0 " + "[" * 30 + "]" * 30]
    lines += [f"a{i}: &a{i} " + "[" * 30 + f"*a{i - 1}" + "]" * 30 for i in range(1, 4)]
    (problem,) = problems_of("\n".join(lines) + "\n")
    assert problem.endswith(f"nested more than {MAX_DEPTH} levels deep (through aliases)")


def test_exactly_the_maximum_depth_is_allowed():
    depth = MAX_DEPTH - 1  # the outer mapping is one level
    assert load_yaml("a: " + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "\n", "f.yaml") is not None
    with pytest.raises(FileError):
        load_yaml("a: " + "[" * depth + "1" + "]" * depth + "\n", "f.yaml")


@pytest.mark.parametrize(("text", "where", "code"), [
    ("a: b\x00c\n", "line 1, column 5", "U+0000"),
    ("a: 1\nb: x\x07\n", "line 2, column 5", "U+0007"),
    ("\x00", "line 1, column 1", "U+0000"),
])
def test_characters_yaml_does_not_allow_are_named_with_their_line(text, where, code):
    assert problems_of(text) == [f"f.yaml: {where}: invalid YAML: the character {code} is not allowed in YAML"]


def test_an_escaped_nul_is_a_string_that_the_typed_readers_refuse():
    document = load_yaml('name: "a\\0b"\n', "f.yaml")
    assert document == {"name": "a\x00b"}
    problems = Problems("f.yaml")
    assert Reader(problems, "e", document, ("name",)).text("name") is MISSING
    assert problems.items == ["f.yaml: e.name: must not contain NUL characters"]


def test_a_text_over_the_size_limit_is_refused_before_parsing():
    started = time.monotonic()
    assert problems_of("#" * (10 * 1000 * 1000)) == [
        f"f.yaml: the file is larger than the limit of {MAX_BYTES:,} bytes"]
    assert time.monotonic() - started < 2
    assert problems_of("é" * (MAX_BYTES // 2 + 1)) == [  # the limit is in bytes (UTF-8), not characters
        f"f.yaml: the file is larger than the limit of {MAX_BYTES:,} bytes"]


def test_read_source_reads_at_most_the_limit_plus_one_byte(tmp_path):
    class Endless(io.RawIOBase):
        asked: list[int] = []
        name = "<endless>"

        def read(self, size: int = -1) -> bytes:
            self.asked.append(size)
            return b"x" * size

    stdin = io.TextIOWrapper(Endless())
    with pytest.raises(FileError) as info:
        read_source("-", stdin)
    assert info.value.problems == [f"<stdin>: the file is larger than the limit of {MAX_BYTES:,} bytes"]
    assert Endless.asked == [MAX_BYTES + 1]


def test_read_source_files_and_their_errors(tmp_path):
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    (tmp_path / "big.yaml").write_bytes(b"#" * (10 * 1000 * 1000))
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    assert read_source(str(tmp_path / "ok.yaml"), io.StringIO()) == ("a: 1\n", str(tmp_path / "ok.yaml"))
    assert read_source("-", io.StringIO("a: 2\n")) == ("a: 2\n", "<stdin>")
    cases = {
        "nope.yaml": "nope.yaml: no such file",
        str(tmp_path / "big.yaml"): f"{tmp_path / 'big.yaml'}: the file is larger than the limit of 4,194,304 bytes",
        str(tmp_path / "latin1.yaml"): f"{tmp_path / 'latin1.yaml'}: cannot read the file: 'utf-8' codec can't",
        str(tmp_path): f"{tmp_path}: cannot read the file: [Errno 21] Is a directory",
    }
    for file, expected in cases.items():
        with pytest.raises(FileError) as info:
            read_source(file, io.StringIO())
        assert info.value.problems[0].startswith(expected)


def test_dev_zero_is_too_large_not_a_hang():
    with pytest.raises(FileError, match="larger than the limit"):
        read_source("/dev/zero", io.StringIO())


def test_syntax_errors_and_duplicate_keys_name_the_line():
    assert problems_of("a: [1\n")[0].startswith("f.yaml: line 2, column 1: invalid YAML: while parsing a flow")
    assert problems_of("a: 1\nb: 2\na: 3\n") == [
        "f.yaml: line 3, column 1: invalid YAML: duplicate key 'a' (first on line 1)"]


def test_python_tags_are_refused():
    assert "could not determine a constructor" in problems_of("a: !!python/object/apply:os.system [ls]\n")[0]


def test_load_mapping_checks_the_top_level():
    assert load_mapping("", "f.yaml", keys=("a",)) == {}
    for text, expected in [("- a\n", "f.yaml: the file must be a mapping with the keys a, b"),
                           ("c: 1\n", "f.yaml: c: unknown top-level key (known: a, b)")]:
        with pytest.raises(FileError) as info:
            load_mapping(text, "f.yaml", keys=("a", "b"))
        assert info.value.problems == [expected]


# ------------------------------------------------------------------------------------------------- typed fields


def read(data, known=("s", "n", "b", "i", "m", "l", "t", "j"), where="things[0] (x)"):
    problems = Problems("f.yaml")
    return Reader(problems, where, data, known), problems


@pytest.mark.parametrize(("data", "call", "expected"), [
    ({"s": 42}, lambda r: r.text("s"), "things[0] (x).s: must be a string, not a number (put it in quotes)"),
    ({"s": [1]}, lambda r: r.text("s"), "things[0] (x).s: must be a string, not a list"),
    ({"s": dt.date(2026, 1, 1)}, lambda r: r.text("s"), "things[0] (x).s: must be a string, not a date (put it"),
    ({}, lambda r: r.text("s", required=True), "things[0] (x).s: is required"),
    ({"s": " "}, lambda r: r.text("s", required=True), "things[0] (x).s: must not be empty"),
    ({"s": "c"}, lambda r: r.text("s", choices=("a", "b")), "things[0] (x).s: must be one of a, b, not 'c'"),
    ({"s": "abc"}, lambda r: r.text("s", max_length=2), "things[0] (x).s: must be at most 2 characters"),
    ({"s": "a\x00"}, lambda r: r.text("s"), "things[0] (x).s: must not contain NUL characters"),
    ({"n": "ten"}, lambda r: r.decimal("n"), "things[0] (x).n: must be a decimal number, not 'ten'"),
    ({"n": True}, lambda r: r.decimal("n"), "things[0] (x).n: must be a decimal number, not a boolean"),
    ({"n": float("nan")}, lambda r: r.decimal("n"), "things[0] (x).n: must be a finite decimal number"),
    ({"n": "Infinity"}, lambda r: r.decimal("n"), "things[0] (x).n: must be a finite decimal number"),
    ({"b": "yes"}, lambda r: r.boolean("b"), "things[0] (x).b: must be true or false, not a string"),
    ({"i": -1}, lambda r: r.integer("i"), "things[0] (x).i: must be a whole number ≥ 0, not -1"),
    ({"i": 1.5}, lambda r: r.integer("i"), "things[0] (x).i: must be a whole number ≥ 0, not 1.5"),
    ({"i": 10**30}, lambda r: r.integer("i", maximum=2**31 - 1), "things[0] (x).i: must be at most 2147483647"),
    ({"m": "x"}, lambda r: r.mapping("m"), "things[0] (x).m: must be a mapping, not a string"),
    ({"m": {"a": {"b": ["\x00"]}}}, lambda r: r.mapping("m"), "things[0] (x).m: must not contain NUL characters"),
    ({"m": {"a\x00": 1}}, lambda r: r.mapping("m"), "things[0] (x).m: must not contain NUL characters"),
    ({"m": {"a": dt.date(2026, 1, 1)}}, lambda r: r.mapping("m", json_only=True), "things[0] (x).m: must hold only"),
    ({"m": {1: "a"}}, lambda r: r.mapping("m", json_only=True), "things[0] (x).m: must hold only JSON values"),
    ({"j": [float("inf")]}, lambda r: r.json("j"), "things[0] (x).j: must hold only JSON values"),
    ({"l": {"a": 1}}, lambda r: r.items("l"), "things[0] (x).l: must be a list, not a mapping"),
    ({"t": "2026-10-01"}, lambda r: r.datetime("t"), "things[0] (x).t: needs a time zone offset"),
    ({"t": "noon"}, lambda r: r.datetime("t"), "things[0] (x).t: must be an RFC 3339 date-time such as"),
    ({"t": 5}, lambda r: r.datetime("t"), "things[0] (x).t: must be an RFC 3339 date-time such as 2026-10-01T00:00:00Z, not a number"),  # noqa: E501
    ({"t": "0001-01-01T00:00:00+01:00"}, lambda r: r.datetime("t"), "things[0] (x).t: is out of range"),
    ("x", lambda r: None, "things[0] (x): must be a mapping of fields, not a string"),
    (None, lambda r: None, "things[0] (x): must be a mapping of fields, not null"),
    ({"zz": 1}, lambda r: None, "things[0] (x).zz: unknown field (known: s, n, b, i, m, l, t, j)"),
])
def test_wrong_types_name_the_entry_and_the_field(data, call, expected):
    reader, problems = read(data)
    call(reader)
    assert not reader.ok
    assert len(problems.items) == 1
    assert problems.items[0].startswith(f"f.yaml: {expected}")


def test_good_values_are_read_exactly():
    reader, problems = read({"s": " a ", "n": 0.1, "b": True, "i": 3, "m": {"k": [1, None]}, "l": [],
                             "t": "2026-10-01T02:00:00+02:00"})
    assert reader.text("s") == "a" and reader.text("s", strip=False) == " a "
    assert reader.decimal("n") == Decimal("0.1")  # via str: not 0.1000000000000000055…
    assert reader.boolean("b") is True and reader.integer("i") == 3
    assert reader.mapping("m", json_only=True) == {"k": [1, None]} and reader.items("l") == []
    assert reader.datetime("t") == dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    assert reader.text("j") is MISSING and reader.integer("j") is MISSING and reader.decimal("j") is None
    assert reader.ok and problems.items == []


def test_a_fields_own_check_speaks_before_the_generic_ones():
    reader, problems = read({"s": "a\x00b"})
    reader.text("s", check=lambda value: "a subject must not contain control characters")
    assert problems.items == ["f.yaml: things[0] (x).s: a subject must not contain control characters"]


def test_nested_readers_name_the_path_and_fail_their_parents():
    reader, problems = read({"m": {"price": {"tiers": [{"up_to": "x"}]}}}, known=("m",))
    price = reader.nested("m.price", reader.raw("m")["price"], ("tiers",))
    tier = price.nested("tiers[0]", price.items("tiers")[0], ("up_to",))
    assert tier.decimal("up_to") is None
    assert problems.items == ["f.yaml: things[0] (x).m.price.tiers[0].up_to: must be a decimal number, not 'x'"]
    assert not tier.ok and not price.ok and not reader.ok


def test_decimal_limits_of_a_subclass():
    class Storage(Reader):
        decimal_places = 2
        decimal_integer_digits = 3

    problems = Problems("f.yaml")
    reader = Storage(problems, "e", {"a": "0.001", "b": "1000", "c": "999.99"}, ("a", "b", "c"))
    assert reader.nested("x", {}, ()).decimal_places == 2
    assert (reader.decimal("a"), reader.decimal("b"), reader.decimal("c")) == (None, None, Decimal("999.99"))
    assert problems.items == ["f.yaml: e.a: must have at most 2 decimal places (got 0.001)",
                              "f.yaml: e.b: must be less than 10^3"]
    assert to_decimal("0.0000000000000000001") == Decimal("1E-19")  # no limits by default


# ------------------------------------------------------------------------------------------------------ entries


def test_entries_are_labelled_by_key_and_duplicates_named():
    problems = Problems("f.yaml")
    declared: set[str] = set()

    def parse(problems, where, data):
        r = Reader(problems, where, data, ("key",))
        return r if r.ok else None

    entries = parse_entries(problems, {"things": [{"key": "a"}, {"key": "a"}, {"key": "b", "x": 1}, 7,
                                                  {"key": "\x1b[31mred"}]},
                            "things", parse, key_field="key", declared=declared)
    check_duplicates(problems, entries, lambda e: e.data["key"], "key")
    assert [e.where for e in entries] == ["things[0] (a)", "things[1] (a)", "things[4]"]  # no escape in a label
    assert declared == {"a", "b", "\x1b[31mred"}
    assert problems.items == [
        "f.yaml: things[2] (b).x: unknown field (known: key)",
        "f.yaml: things[3]: must be a mapping of fields, not a number",
        "f.yaml: things[1] (a): duplicate: things[0] (a) has the same key",
    ]
    assert parse_entries(problems, {"things": "a"}, "things", parse) == []
    assert problems.items[-1] == "f.yaml: things: must be a list of entries, not a string"


def test_a_services_refusal_names_each_field_or_the_entry():
    problems = Problems("f.yaml")

    class Refused(ValueError):
        errors = {"email": "'x' is not an email address"}

    assert problems.refused("customers[0] (a)", Refused()).problems == [
        "f.yaml: customers[0] (a).email: 'x' is not an email address"]
    assert problems.refused("plans[0] (p)", ValueError("no")).problems[-1] == "f.yaml: plans[0] (p): no"


# ---------------------------------------------------------------------------------------------- what would change


def test_show_and_diffs():
    assert [show(v) for v in (None, MISSING, True, Decimal("0.000020"), "AI Tokens", "kong-air", {"b": 1, "a": [2]})] \
        == ["null", "null", "true", "0.00002", '"AI Tokens"', "kong-air", "{a: [2], b: 1}"]
    assert diff_values({"price": {"unit_amount": Decimal("49.00"), "flag": True}},
                       {"price": {"unit_amount": Decimal(49), "flag": 1}}) == ["price.flag true -> 1"]
    current = {"name": "Kong", "email": "", "country": "US"}
    changes = changed_fields(current, {"name": "Kong Air", "email": None, "country": "US"})
    assert changes_text(current, changes) == 'name Kong -> "Kong Air", email "" -> null'
    assert without_empty({"a": None, "b": "", "c": {}, "d": [], "e": 0, "f": False, "g": "", "h": "x"},
                         optional=("a", "b", "c", "d", "e", "f", "h")) == {"e": 0, "f": False, "g": "", "h": "x"}


# -------------------------------------------------------------------------------------------------- type names


@pytest.mark.parametrize(("value", "yaml_name", "json_name"), [
    (None, "null", "null"), (True, "a boolean", "a boolean"), (3, "a number", "a number"),
    (1.5, "a number", "a number"), (Decimal(1), "a number", "a number"), ("x", "a string", "a string"),
    ([1], "a list", "an array"), ({}, "a mapping", "an object"), (dt.date(2026, 1, 1), "a date", "a date"),
    (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "a date", "a date"), (b"x", "bytes", "bytes"),
])
def test_one_type_name_helper_in_yaml_and_json_words(value, yaml_name, json_name):
    assert type_name(value) == yaml_name
    assert json_type_name(value) == json_name
