"""Issue 8's acceptance: randomized bad invocations of the real ``optbench`` give no traceback, exit 0/1/2, no hang
and lose or change no result (the harness is tests/fuzz_cli.py; ``python -m tests.fuzz_cli`` runs it by hand)."""

from __future__ import annotations

import pytest

from tests import fuzz_cli

QUICK_CASES = 36  # cases click rejects at parsing: a fraction of a second each
SLOW_CASES = 4  # plus a few that get past parsing without training (score, data list over damaged input)
CHEAP_COMMANDS = ("score", "data")  # no torch import: about a second each


def _assert_clean(outcomes: list[fuzz_cli.Outcome], seed: int) -> None:
    failing = [o for o in outcomes if o.failures]
    assert not failing, fuzz_cli.summarize(outcomes, seed) + "\n\nall failing:\n" + "\n\n".join(
        fuzz_cli.describe(o, seed) for o in failing)


def _sample(seed: int) -> list[int]:
    """Case indices of a fixed sample: the first QUICK_CASES quick ones and the first SLOW_CASES others."""
    quick, slow = [], []
    for i in range(2000):
        case = fuzz_cli.make_case(seed, i)
        if fuzz_cli.quick(case):
            quick.append(i)
        elif all(step.argv[0] in CHEAP_COMMANDS and "prepare" not in step.argv for step in case.steps):
            slow.append(i)
        if len(quick) >= QUICK_CASES and len(slow) >= SLOW_CASES:
            break
    return sorted(quick[:QUICK_CASES] + slow[:SLOW_CASES])


def test_fixed_sample_of_bad_invocations() -> None:
    outcomes = fuzz_cli.fuzz(0, 0, indices=_sample(0), jobs=2)
    assert len(outcomes) == QUICK_CASES + SLOW_CASES
    _assert_clean(outcomes, 0)


def test_checks_catch_what_they_target(tmp_path) -> None:
    """The harness itself: a traceback, a bad exit code and a lost result are each reported."""
    assert fuzz_cli.check_step(fuzz_cli.Step(["x"]), 1, b"", b"Traceback (most recent call last):\nValueError")
    assert fuzz_cli.check_step(fuzz_cli.Step(["x"]), 3, b"", b"")
    assert fuzz_cli.check_step(fuzz_cli.Step(["x"]), None, b"", b"")
    assert fuzz_cli.check_step(fuzz_cli.Step(["x"], expect_rc=2, expect_text="blocker"), 2, b"", b"error: no")
    assert not fuzz_cli.check_step(fuzz_cli.Step(["x"], expect_rc=2, expect_text="blocker"), 2, b"",
                                   b"error: 'blocker/sub' is not writable")
    (tmp_path / "a").write_bytes(b"1")
    before = fuzz_cli.snapshot(tmp_path)
    (tmp_path / "a").unlink()
    assert b"a" in before and b"a" not in fuzz_cli.snapshot(tmp_path)


def test_cases_are_reproducible() -> None:
    for i in (0, 7, 123):
        a, b = fuzz_cli.make_case(5, i), fuzz_cli.make_case(5, i)
        assert [s.argv for s in a.steps] == [s.argv for s in b.steps] and a.ops == b.ops
    assert {fuzz_cli.make_case(0, i).kind for i in range(200)} == set(fuzz_cli.KINDS)


@pytest.mark.slow
def test_thousand_bad_invocations() -> None:
    outcomes = fuzz_cli.fuzz(1000, 0, jobs=2)
    _assert_clean(outcomes, 0)
