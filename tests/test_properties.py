"""Property tests (issue 8): hyperparameter parsing and ``optbench run``'s option parsing on arbitrary input.

The only exception bad input may raise is :class:`optbench.errors.UsageError` (the CLI turns it into one line and
exit code 2); through the CLI, the exit code is 0, 1 or 2 and the output holds no traceback.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from optbench.errors import UsageError
from optbench.plugins.hparams import merge, parse_assignments, parse_search_space, parse_value
from tests.fuzz_cli import BAD_JSON_VALUES, BAD_NUMBERS, MARKUP

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# JSON scalars including the ones Python's decoder lets through (NaN, Infinity, 2^70, -0.0).
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.text(max_size=6), kids, max_size=3), max_leaves=12)
# Nesting far past the recursion limit, in the two shapes JSON has.
deep_text = st.builds(lambda d, obj: '{"a":' * d + "1" + "}" * d if obj else "[" * d + "]" * d,
                      st.integers(min_value=1, max_value=50_000), st.booleans())
nasty_text = st.text(max_size=40) | st.sampled_from([*BAD_NUMBERS, *BAD_JSON_VALUES, *MARKUP]) | deep_text


def _only_usage_errors(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``, where a UsageError (with a message) counts as a correct answer; returns the result or None."""
    try:
        return fn(*args, **kwargs)
    except UsageError as exc:
        assert str(exc).strip(), "a usage error needs a message"
        return None


@FAST
@given(nasty_text)
def test_parse_value_raises_only_usage_errors(text: str) -> None:
    _only_usage_errors(parse_value, text)


@FAST
@given(st.lists(nasty_text | st.builds(lambda k, v: f"{k}={v}", st.text(max_size=8), nasty_text), max_size=4))
def test_parse_assignments_raises_only_usage_errors(items: list[str]) -> None:
    out = _only_usage_errors(parse_assignments, items)
    if out is not None:  # what parses must be storable: the results store writes hparams as JSON
        json.dumps(out)


@FAST
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=4),
       st.dictionaries(st.text(max_size=6), json_values, max_size=4), st.text(max_size=10))
def test_merge_raises_only_usage_errors(defaults: dict[str, Any], given_: dict[str, Any], name: str) -> None:
    out = _only_usage_errors(merge, defaults, given_, submission=name)
    if out is not None:
        assert set(out) >= set(defaults)


def _dimension() -> st.SearchStrategy[Any]:
    """A dimension: mostly numeric bounds (NaN, inf, huge and negative included), sometimes anything."""
    special = st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, 0, -1, 2**70, 10**400])
    number = st.one_of(special, special, st.floats(), st.floats(min_value=-1e3, max_value=1e3), st.integers(), st.integers(0, 10),
                       st.text(max_size=5), st.none(), st.lists(st.floats(), max_size=2))
    optional = {"scaling": st.sampled_from(["log", "linear", "", "LOG", "[bold]"]) | json_values,
                "integer": st.booleans() | json_values, "feasible_points": json_values | st.lists(json_values,
                                                                                                  max_size=3)}
    return (st.fixed_dictionaries({"min": number, "max": number}, optional=optional)
            | st.fixed_dictionaries({}, optional={"min": number, "max": number, **optional}))


search_spaces = (st.dictionaries(st.text(max_size=6), _dimension() | json_values, max_size=3)
                 | st.lists(json_values | st.dictionaries(st.text(max_size=4), json_values, max_size=3), max_size=3)
                 | json_values)


@FAST
@given(search_spaces, st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=8, max_size=8))
def test_parse_search_space_raises_only_usage_errors(raw: Any, u: list[float]) -> None:
    space = _only_usage_errors(parse_search_space, raw, source="space.json")
    if space is None or not space.dims:
        return
    point = space.point(u[: len(space.dims)] + [0.0] * max(0, len(space.dims) - len(u)))
    for dim in space.dims:  # an accepted range must give values a trial can use
        value = point[dim.name]
        if isinstance(value, float):
            assert math.isfinite(value), f"{dim} gives {value}"


@FAST
@given(deep_text)
def test_parse_search_space_of_deep_json_text(text: str) -> None:
    """Deep JSON reaches parse_search_space already decoded: nothing in it may recurse without bound either."""
    try:
        raw = json.loads(text)
    except RecursionError:
        return  # the decoder's own limit; reading files is the CLI test's business
    _only_usage_errors(parse_search_space, {"lr": {"feasible_points": [raw]}}, source="space.json")
    _only_usage_errors(parse_search_space, raw, source="space.json")


# -------------------------------------------------------------------------------------------------- the CLI

ALLOWED_EXIT = {0, 1, 2}
_RUN_OPTIONS = ("-o", "--seed", "--max-steps", "--batch-size", "--max-seconds", "--timeout", "--study",
                "--micro-batch-size", "--sync-every", "--checkpoint-every", "--step-hint")
option_values = st.text(max_size=20) | st.sampled_from([*BAD_NUMBERS, *BAD_JSON_VALUES, *MARKUP])


def _too_big_to_allocate(value: str) -> bool:
    """A batch size that would really allocate gigabytes in this process (parsed the way the harness might)."""
    try:
        n = float(value.strip())
    except ValueError:
        return False
    return math.isfinite(n) and 2_000 < n < 2**62


@pytest.fixture(scope="module")
def scratch() -> Any:
    with tempfile.TemporaryDirectory(prefix="optbench-props-") as d:
        yield Path(d)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(_RUN_OPTIONS), option_values, min_size=1, max_size=3),
       st.sampled_from(["lr", "batch_size", "schedule", "warmup_frac", "nosuch", ""]))
def test_run_option_parsing_never_crashes(scratch: Path, options: dict[str, str], key: str) -> None:
    from click.testing import CliRunner

    from optbench.cli import main

    for opt in ("--batch-size", "-o"):
        assume(not (opt in options and (opt == "--batch-size" or key == "batch_size")
                    and _too_big_to_allocate(options[opt])))
    args = ["run", "-w", "linreg", "-s", "sgd", "--quiet", "--results-dir", str(scratch / "results")]
    args += ["--max-steps", "1"] if "--max-steps" not in options else ["--max-seconds", "1"]
    for opt, value in options.items():
        args += [opt, f"{key}={value}" if opt == "-o" else value]
    if "--max-steps" in options and "--max-seconds" in options:
        args += ["--max-steps", "1"]  # one bound stays small whatever was drawn
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"optbench {' '.join(args)} raised {type(result.exception).__name__}: {result.exception}")
    assert result.exit_code in ALLOWED_EXIT, f"optbench {' '.join(args)} exited {result.exit_code}"
    assert "Traceback" not in result.output, f"optbench {' '.join(args)}:\n{result.output}"
