"""Hyperparameter parsing, JSON checks and search spaces at their edges, pinned for mutation testing
(benchmarks/mutation.py): exact error messages, depth limits on both sides, and sampled values by hand."""

from __future__ import annotations

import math

import pytest

from optbench.errors import UsageError
from optbench.plugins.hparams import (MAX_DEPTH, Choice, Range, SearchSpace, check_json, check_keys, load_file, loads, merge,
                              parse_assignments, parse_search_space, parse_value)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# ------------------------------------------------------------------------------------------------------- JSON
def test_loads_decodes_and_names_the_source():
    assert loads('{"lr": 0.1}', source="x") == {"lr": 0.1}
    assert loads(b"[1, 2]", source="x") == [1, 2]
    with pytest.raises(UsageError, match=r"^hp\.json: not valid JSON \(Expecting "):
        loads("{'lr': }", source="hp.json")
    with pytest.raises(UsageError, match=r"^hp\.json: JSON nested too deeply$"):
        loads("[" * 100_000 + "]" * 100_000, source="hp.json")
    with pytest.raises(UsageError, match=r"^hp\.json: not valid JSON"):
        loads(b"\xff\xfe", source="hp.json")
    with pytest.raises(UsageError, match=r"^s: nested more than 32 levels deep$"):
        loads("[" * 40 + "]" * 40, source="s")


def test_load_file_reads_json_or_says_why_not(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"lr": 0.5}')
    assert load_file(good, what="hyperparameters") == {"lr": 0.5}
    missing = tmp_path / "missing.json"
    with pytest.raises(UsageError) as info:
        load_file(missing, what="search space")
    assert str(info.value) == f"cannot read search space {str(missing)!r}: No such file or directory"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UsageError, match=rf"^search space {str(bad)!r}: not valid JSON"):
        load_file(bad, what="search space")


def test_check_json_depth_limit_on_both_sides():
    check_json(_nested(MAX_DEPTH), where="w")  # exactly the limit is fine
    with pytest.raises(UsageError, match=r"^w: nested more than 32 levels deep$"):
        check_json(_nested(MAX_DEPTH + 1), where="w")
    deep_dict: object = 1
    for _ in range(MAX_DEPTH):
        deep_dict = {"k": deep_dict}
    check_json(deep_dict, where="w")
    with pytest.raises(UsageError, match="nested more than"):
        check_json({"k": deep_dict}, where="w")
    with pytest.raises(UsageError, match="nested more than"):  # tuples count like lists
        check_json((_nested(MAX_DEPTH),), where="w")


def test_check_json_refuses_what_the_store_cannot_write():
    check_json({"a": [None, True, 1, 2.5, "x", {"b": ()}]}, where="w")
    with pytest.raises(UsageError, match=r"^w: keys must be text, got 1$"):
        check_json({1: 2}, where="w")
    with pytest.raises(UsageError, match=r"^w: text that is not valid UTF-8: 'a\\\\udcff'$"):
        check_json(["a\udcff"], where="w")
    with pytest.raises(UsageError, match=r"^w: text that is not valid UTF-8"):
        check_json({"k\udcff": 1}, where="w")  # keys too
    with pytest.raises(UsageError, match=r"^w: unsupported value \{1, 2\}$"):
        check_json({"s": {1, 2}}, where="w")
    with pytest.raises(UsageError, match=r"^w: unsupported value b'x'$"):
        check_json([b"x"], where="w")


# ----------------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize("text,value", [
    (" False ", False), ("None", None), (" 2 ", 2), ("null", None), ("\"q\"", "q"), ("cos ine", "cos ine"),
    (" plain ", " plain "), ("{\"a\": 1}", {"a": 1}),
])
def test_parse_value_edges(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_parse_value_refuses_deep_nesting():
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(UsageError) as info:
        parse_value(text)
    assert str(info.value) == f"--opt-arg value nested too deeply: {text[:40]!r}..."


def test_parse_assignments_strips_keys_and_names_bad_items():
    assert parse_assignments([" lr =0.1", "a=", "b==c"]) == {"lr": 0.1, "a": "", "b": "=c"}
    for bad in ("lr", " =1", ""):
        with pytest.raises(UsageError) as info:
            parse_assignments(["ok=1", bad])
        assert str(info.value) == f"--opt-arg expects KEY=VALUE, got {bad!r}"


def test_merge_overrides_defaults_and_check_keys_names_every_unknown():
    assert merge({"lr": 1, "wd": 0}, {"wd": 3}, submission="s") == {"lr": 1, "wd": 3}
    with pytest.raises(UsageError) as info:
        merge({"lr": 1}, {"mom": 0.9}, submission="mine")
    assert str(info.value) == "submission 'mine' has no hyperparameter mom; it accepts: lr"
    check_keys({"lr": 1}, ["lr", "batch_size"], submission="s")
    with pytest.raises(UsageError) as info:
        check_keys({"wd": 0, "lr": 1}, ["zz", "lr", "aa", "zz"], submission="mine")
    assert str(info.value) == "submission 'mine' has no hyperparameter aa, zz; it accepts: lr, wd"
    with pytest.raises(UsageError) as info:
        check_keys({}, ["x"], submission="bare")
    assert str(info.value) == "submission 'bare' has no hyperparameter x; it accepts: (none)"


# ----------------------------------------------------------------------------------------------- search spaces
def test_range_values_by_hand():
    log = Range(name="lr", low=1e-4, high=1e-0, scaling="log")
    assert log.at(0.0) == pytest.approx(1e-4) and log.at(0.25) == pytest.approx(1e-3)
    assert log.at(0.75) == pytest.approx(1e-1)
    lin = Range(name="wd", low=2.0, high=6.0, scaling="linear")
    assert lin.at(0.0) == 2.0 and lin.at(0.25) == 3.0 and lin.at(0.999) == pytest.approx(5.996)
    whole = Range(name="n", low=1, high=10, scaling="linear", integer=True)
    assert whole.at(0.5) == 6 and type(whole.at(0.5)) is int and whole.at(0.0) == 1  # round(5.5) = 6
    assert Range(name="n", low=1, high=100, scaling="log", integer=True).at(0.5) == 10
    assert Range(name="x", low=1, high=2, scaling="linear").integer is False


def test_choice_values_by_hand():
    c = Choice(name="s", points=("a", "b", "c"))
    assert [c.at(u) for u in (0.0, 0.33, 0.34, 0.66, 0.67, 0.999)] == ["a", "a", "b", "b", "c", "c"]
    assert c.at(1.0) == "c"  # the top end of the cube stays in range


def test_point_needs_one_coordinate_per_dimension():
    space = SearchSpace(dims=(Range(name="a", low=0, high=1, scaling="linear"), Choice(name="b", points=(1, 2))))
    assert space.point([0.5, 0.9]) == {"a": 0.5, "b": 2}
    with pytest.raises(ValueError):
        space.point([0.5])
    assert SearchSpace().names == () and SearchSpace().fixed == ()


def test_search_space_defaults_and_flags():
    space = parse_search_space({"a": {"min": "1", "max": 3}, "n": {"min": 1, "max": 4, "integer": True},
                                "p": {"feasible_points": [[1], {"x": 2}]}, "e": {"min": 2, "max": 2}})
    a, n, p, e = space.dims
    assert a == Range(name="a", low=1.0, high=3.0, scaling="linear", integer=False)
    assert n.integer is True and type(n.low) is float
    assert p == Choice(name="p", points=([1], {"x": 2}))
    assert e.low == e.high == 2.0  # min == max is allowed
    assert parse_search_space({"lr": {"min": 1e-3, "max": 1, "scaling": "log"}}).dims[0].scaling == "log"


@pytest.mark.parametrize("raw,message", [
    ([{"lr": 1}, 3], "src: a list search space must be a non-empty list of objects"),
    ([], "src: a list search space must be a non-empty list of objects"),
    ({}, "src: expected a JSON object of dimensions or a list of configurations"),
    ("lr", "src: expected a JSON object of dimensions or a list of configurations"),
    ({"lr": [1, 2]}, "src: dimension 'lr' must be an object"),
    ({"b": {"feasible_points": "ab"}}, "src: 'b'.feasible_points must be a non-empty list"),
    ({"b": {"feasible_points": []}}, "src: 'b'.feasible_points must be a non-empty list"),
    ({"lr": {"max": 1}}, "src: 'lr' needs numeric 'min' and 'max' (or 'feasible_points')"),
    ({"lr": {"min": None, "max": 1}}, "src: 'lr' needs numeric 'min' and 'max' (or 'feasible_points')"),
    ({"lr": {"min": "x", "max": 1}}, "src: 'lr' needs numeric 'min' and 'max' (or 'feasible_points')"),
    ({"lr": {"min": 1, "max": 2, "scaling": "cubic"}}, "src: 'lr'.scaling must be 'log' or 'linear', got 'cubic'"),
    ({"lr": {"min": 1, "max": math.inf}}, "src: 'lr' needs finite 'min' and 'max', got 1.0 and inf"),
    ({"lr": {"min": math.nan, "max": 1}}, "src: 'lr' needs finite 'min' and 'max', got nan and 1.0"),
    ({"lr": {"min": 2, "max": 1}}, "src: 'lr' needs min <= max (and min > 0 on a log scale)"),
    ({"lr": {"min": 0, "max": 1, "scaling": "log"}}, "src: 'lr' needs min <= max (and min > 0 on a log scale)"),
    ({"lr": {"min": -1, "max": 1, "scaling": "log"}}, "src: 'lr' needs min <= max (and min > 0 on a log scale)"),
])
def test_bad_search_spaces_exact_messages(raw, message):
    with pytest.raises(UsageError) as info:
        parse_search_space(raw, source="src")
    assert str(info.value) == message


def test_search_space_default_source_and_edges_accepted():
    with pytest.raises(UsageError, match=r"^search space: expected a JSON object"):
        parse_search_space({})
    ok = parse_search_space({"lr": {"min": -1, "max": 0}, "x": {"min": 1e-9, "max": 1e-9, "scaling": "log"}})
    assert [d.low for d in ok.dims] == [-1.0, 1e-9]
