"""The sweep engine every trial-running command goes through (optbench/sweep/engine.py), and the trial options
every such command shares.

- :func:`run_plan` runs a plan, then finds every trial recorded on a second call (statuses, paths, the plan line),
  and its outcomes read back their records; a trial claimed by a live process is left to it, a dead process's claim
  is taken over, a trial recorded under another budget is refused.
- ``run``, ``tune`` and every recipe accept the same trial options (``--device cpu --timeout 60 --resume
  --checkpoint-every --micro-batch-size``) and reject bad values of them in one line, exit code 2, before any trial
  trains (table-driven over commands x bad inputs).
- A property: any text given to ``--lrs`` / ``--batch-sizes`` is parsed to positive finite numbers or refused with a
  :class:`UsageError`, never another exception.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optbench.cli import main
from optbench.engine.prepared import MAX_BATCH, TrialConfig
from optbench.errors import UsageError
from optbench.options import options_of
from optbench.recipes.cbs import CbsSpec
from optbench.sweep import claims
from optbench.sweep.engine import Execution, Planned, prepare_plan, record_identity, recorded, run_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"device": "cpu", "max_steps": 40, "eval_every_steps": 20, "hparams": {"schedule": "constant"}}


class Collect:
    """A reporter that keeps what the engine tells it."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.outcomes: list = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def done(self, outcome) -> None:
        self.outcomes.append(outcome)

    def observer(self, prep):
        return None


def _plan(n: int = 3, **overrides) -> list[Planned]:
    cfg = {**FAST, "study": "engine", **overrides}
    return [Planned(workload="linreg", submission="sgd", config=TrialConfig(seed=i, trial=f"t{i}", **cfg),
                    tags={"i": i}) for i in range(n)]


def _parquets(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*.parquet"))


def _fingerprint(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in _parquets(root)}


# ------------------------------------------------------------------------------------------------ run_plan


def test_run_plan_runs_every_trial_then_finds_them_all_recorded(results):
    plan = _plan(3)
    first = Collect()
    result = run_plan(plan, results_dir=results, reporter=first)
    assert [o.status for o in result.outcomes] == ["ran"] * 3
    assert [o.status for o in first.outcomes] == ["ran"] * 3
    assert first.notes[0] == "3 trials planned, 0 already recorded, 3 to run"
    files = _parquets(results)
    assert len(files) == 3 and sorted(o.path for o in result.outcomes) == files
    before = _fingerprint(results)

    second = Collect()
    again = run_plan(plan, results_dir=results, reporter=second)
    assert [o.status for o in again.outcomes] == ["recorded"] * 3
    assert [o.status for o in second.outcomes] == ["recorded"] * 3
    assert second.notes[0] == "3 trials planned, 3 already recorded, 0 to run"
    assert [o.path for o in again.outcomes] == [o.path for o in result.outcomes]  # plan order, same files
    assert _fingerprint(results) == before  # nothing written, nothing rewritten

    for i, o in enumerate(again.outcomes):
        assert o.planned is plan[i] and o.planned.tags == {"i": i}
        rec, evals = o.read()
        assert (rec["workload"], rec["submission"], rec["study"], rec["trial"], rec["seed"]) == (
            "linreg", "sgd", "engine", f"t{i}", i)
        assert rec["max_steps"] == 40 and rec["total_steps"] == 40
        assert record_identity(rec) == o.prep.identity()  # the skip key is computable from the record
        assert list(evals["step"]) == [0, 20, 40]
    assert not list((results / claims.CLAIMS_DIR).glob("*.claim"))
    assert len(list((results / claims.CLAIMS_DIR).glob("*.done"))) == 3
    found, _ = recorded(results)
    assert set(found) == {o.prep.identity() for o in again.outcomes}
    plans = list((results / ".plans").glob("*.json"))
    assert len(plans) == 1 and len(json.loads(plans[0].read_text())) == 3  # the same plan recorded once


def test_run_plan_only_runs_what_is_missing(results):
    run_plan(_plan(2), results_dir=results)
    seen = Collect()
    result = run_plan(_plan(3), results_dir=results, reporter=seen)
    assert [o.status for o in result.outcomes] == ["recorded", "recorded", "ran"]
    assert seen.notes[0] == "3 trials planned, 2 already recorded, 1 to run"
    assert len(_parquets(results)) == 3


def test_outcome_read_without_result_says_why(results):
    prep = prepare_plan(_plan(1), results)[0]
    from optbench.sweep.engine import Outcome

    with pytest.raises(ValueError, match="crashed"):
        Outcome(planned=_plan(1)[0], prep=prep, status="crashed", reason="x").read()


def test_a_trial_claimed_by_a_live_process_is_left_to_it(results):
    plan = _plan(1)
    identity = prepare_plan(plan, results)[0].identity()
    folder = claims.claims_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{identity}.claim").write_text(json.dumps(claims.owner()))  # held by this (live) process
    result = run_plan(plan, results_dir=results)
    assert [o.status for o in result.outcomes] == ["elsewhere"] and result.outcomes[0].path is None
    assert not _parquets(results)
    assert (folder / f"{identity}.claim").exists()  # not ours to remove


def test_a_dead_process_claim_is_taken_over(results):
    plan = _plan(1)
    identity = prepare_plan(plan, results)[0].identity()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = claims.claims_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{identity}.claim").write_text(json.dumps({**claims.owner(), "pid": dead.pid, "started": "1"}))
    result = run_plan(plan, results_dir=results)
    assert [o.status for o in result.outcomes] == ["ran"]
    assert len(_parquets(results)) == 1
    assert not (folder / f"{identity}.claim").exists() and (folder / f"{identity}.done").exists()


def test_a_trial_recorded_under_another_budget_is_refused_before_training(results):
    run_plan(_plan(1), results_dir=results)
    with pytest.raises(UsageError, match="another budget"):
        run_plan(_plan(1, max_steps=60), results_dir=results)
    assert len(_parquets(results)) == 1


def test_bad_execution_options_are_refused_before_anything(results):
    with pytest.raises(UsageError, match="--jobs"):
        run_plan(_plan(1), results_dir=results, execution=Execution(jobs=0))
    with pytest.raises(UsageError, match="--nproc"):
        run_plan(_plan(1), results_dir=results, execution=Execution(nproc=2**63))
    with pytest.raises(UsageError):
        run_plan([], results_dir=results)
    assert not _parquets(results)


# ------------------------------------------------------------------- every command: the same trial options

SMALL = ["--device", "cpu", "--eval-every", "20", "-o", "schedule=constant"]
COMMANDS = {  # command -> (its arguments for one or two tiny trials, its step-budget flag, whether it takes --lrs)
    "run": (["run", "-w", "linreg", "-s", "sgd", "--max-steps", "40", *SMALL], "--max-steps", False),
    "tune": (["tune", "-w", "linreg", "-s", "sgd", "--trials", "1", "--studies", "1", "--max-steps", "40",
              "--device", "cpu", "--eval-every", "20"], "--max-steps", False),
    "cbs": (["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8", "--lrs", "0.01", "--max-steps", "40",
             *SMALL], "--max-steps", True),
    "lr-sweep": (["lr-sweep", "-w", "linreg", "-s", "sgd", "--lrs", "0.01", "--max-steps", "40", *SMALL],
                 "--max-steps", True),
    "shape-search": (["shape-search", "-w", "linreg", "-s", "sgd", "--shapes", "1", "--no-references", "--lrs",
                      "0.01", "--steps", "40", "--device", "cpu", "--eval-every", "20"], "--steps", True),
    "curvature": (["curvature", "-w", "linreg", "-s", "sgd", "--lrs", "0.01", "--max-steps", "40", *SMALL],
                  "--max-steps", True),
    "seesaw": (["seesaw", "-w", "linreg", "-s", "sgd", "--seed", "0", "--twin-steps", "40", "--device", "cpu",
                "--eval-every", "20"], "--twin-steps", False),
    # the ladder's two smallest rungs on the synthetic corpus (DATA: filled in by _invoke), a budget in tokens
    "scaling": (["scaling", "-s", "sgd", "--models", "t1,t2", "--lrs", "0.01", "--seed", "0", "--tokens", "2000",
                 "--no-extend-grid", "--data-dir", "DATA", *SMALL], "--tokens", True),
}
RECIPES = ("cbs", "lr-sweep", "shape-search", "curvature", "seesaw", "scaling")
_DATA: list[Path] = []  # the synthetic corpus, written once on first use


def _data_dir() -> Path:
    if not _DATA:
        import tempfile

        from optbench.data.synthetic import write_synthetic

        root = Path(tempfile.mkdtemp(prefix="optbench-sweep-data-"))
        write_synthetic(root, n_tokens=40_000)
        _DATA.append(root)
    return _DATA[0]


def _invoke(args: list[str]):
    if "DATA" in args:
        args = [str(_data_dir()) if a == "DATA" else a for a in args]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_accepts_the_shared_trial_options(tmp_path, command):
    args, _, _ = COMMANDS[command]
    extra = ["--timeout", "60", "--checkpoint-every", "0.5", "--micro-batch-size", "4"]
    if command != "tune":  # a tune always resumes: it has no --resume
        extra.append("--resume")
    root = tmp_path / "results"
    r = _invoke([*args, *extra, "--results-dir", str(root)])
    assert r.exit_code == 0, r.output
    files = _parquets(root)
    assert files
    from optbench.store.reader import read_trial

    for f in files:
        rec, _ = read_trial(f)
        assert rec["device"] == "cpu" and rec["micro_batch_size"] == 4, rec
        assert rec["outcome"] in ("reached", "missed"), rec
    assert not list(root.rglob("*.claim"))


def _bad_inputs(command: str, blocker: Path) -> dict[str, list[str]]:
    _, steps, lrs = COMMANDS[command]
    bad = {
        "timeout nan": ["--timeout", "nan"],
        "timeout inf": ["--timeout", "inf"],
        "timeout zero": ["--timeout", "0"],
        "timeout true": ["--timeout", "true"],
        "steps 2^63": [steps, "9223372036854775808"],
        "steps empty": [steps, ""],
        "steps true": [steps, "true"],
        "micro-batch 2^63": ["--micro-batch-size", "9223372036854775808"],
        "micro-batch zero": ["--micro-batch-size", "0"],
        "micro-batch true": ["--micro-batch-size", "true"],
        "checkpoint-every nan": ["--checkpoint-every", "nan"],
        "checkpoint-every negative": ["--checkpoint-every", "-1"],
        "checkpoint-every true": ["--checkpoint-every", "true"],
        "max-seconds 2^63": ["--max-seconds", "9223372036854775808"],
        "target nan": ["--target", "nan"],
        "results-dir below a file": ["--results-dir", str(blocker / "sub")],
    }
    if lrs:
        bad |= {"lrs empty": ["--lrs", ""], "lrs true": ["--lrs", "true"], "lrs nan": ["--lrs", "nan"],
                "lrs zero": ["--lrs", "0"]}
    if command in RECIPES:
        bad |= {"out below a file": ["--out", str(blocker / "sub")]}
    if command == "cbs":
        bad |= {"batch-sizes empty": ["--batch-sizes", ""],
                "batch-sizes 2^63": ["--batch-sizes", "9223372036854775808"],
                "batch-sizes true": ["--batch-sizes", "true"]}
    return bad


CASES = [(c, name) for c in COMMANDS for name in _bad_inputs(c, Path("/x"))]


@pytest.mark.parametrize(("command", "case"), CASES, ids=[f"{c}-{n}" for c, n in CASES])
def test_bad_values_fail_in_one_line_before_any_trial(tmp_path, command, case):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args, _, _ = COMMANDS[command]
    bad = _bad_inputs(command, blocker)[case]
    r = _invoke([*args, "--results-dir", str(tmp_path / "results"), *bad])  # a later --results-dir wins
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert "Traceback" not in r.output
    assert not list(tmp_path.rglob("*.parquet")), f"{command} {bad} trained before refusing"


# ------------------------------------------------------------------- the number lists: a property

NUMBERISH = st.text(alphabet="0123456789.,-+eE _nNaAiIfFxX\t\u0663", max_size=24)
ANY_TEXT = st.text(max_size=40)


def _checked(name: str, text: str):
    try:
        return options_of(CbsSpec)[name].check(text)
    except UsageError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(NUMBERISH, ANY_TEXT))
def test_any_lrs_text_gives_positive_finite_floats_or_a_usage_error(text):
    got = _checked("lrs", text)
    if got is not None:
        assert isinstance(got, tuple) and got
        assert all(type(x) is float and math.isfinite(x) and 0 < x <= 1e6 for x in got), got


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(NUMBERISH, ANY_TEXT))
def test_any_batch_sizes_text_gives_positive_ints_or_a_usage_error(text):
    got = _checked("batch_sizes", text)
    if got is not None:
        assert isinstance(got, tuple) and got
        assert all(type(x) is int and 1 <= x <= MAX_BATCH for x in got), got


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1,
                max_size=6))
def test_well_formed_lrs_are_read_back_exactly(lrs):
    assert options_of(CbsSpec)["lrs"].check(",".join(repr(x) for x in lrs)) == tuple(lrs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=MAX_BATCH), min_size=1, max_size=6))
def test_well_formed_batch_sizes_are_read_back_exactly(sizes):
    assert options_of(CbsSpec)["batch_sizes"].check(" , ".join(map(str, sizes))) == tuple(sizes)
