"""Tuning's planning, budgets, store scan and serial running at their edges, pinned for mutation testing
(benchmarks/mutation.py). Seeds are checked against the documented rule (sha256, little-endian, top bits); tunes run
in this process (jobs=1) with 10-step linreg trials."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from optbench.errors import UsageError
from optbench.engine.prepared import MAX_PLANNED_TRIALS, MAX_SEED
from optbench.plugins.registry import Loaded, load_submission, load_workload
from optbench.store.reader import read_results
from optbench.engine.prepared import TrialConfig
from optbench.parallel.executors import DIED, cores
from optbench.sweep.engine import Execution, recorded
from optbench.sweep.tuning import (TuneSpec, effective_budget, halton_points, load_space, plan, resolve_trials,
                                   study_seed, trial_seed, tune)

TINY = {"max_steps": 10, "eval_every_steps": 10}


def _rule(text: str, bits: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> (64 - bits)


def _spec(**kw) -> TuneSpec:
    return TuneSpec(**{"workload": "linreg", "submissions": ("adamw",), "trials": 1, "studies": 1, **kw})


class Notes:
    def __init__(self) -> None:
        self.notes, self.done, self.crashes = [], [], []

    def note(self, text):
        self.notes.append(text)

    def finished(self, trial, done):
        self.done.append((trial, done))

    def crashed(self, trial, reason):
        self.crashes.append((trial, reason))


# ------------------------------------------------------------------------------------------------------ seeds
def test_seeds_follow_the_documented_rule():
    for base, k, i in [(0, 0, 0), (3, 1, 4), (2**40, 7, 0)]:
        assert study_seed(base, k) == _rule(f"optbench-tune-halton:{base}:{k}", 63) < 2**63
        assert trial_seed(base, k, i) == _rule(f"optbench-tune-trial:{base}:{k}:{i}", 31) < 2**31
    assert trial_seed(3, 0, 0) == 1694334526  # pinned in test_tuning too


def test_halton_points_shape_range_and_seed():
    a = halton_points(7, 3, seed=1)
    assert a.shape == (7, 3) and (a >= 0).all() and (a < 1).all()
    assert (halton_points(7, 3, seed=1) == a).all() and not (halton_points(7, 3, seed=2) == a).all()


# --------------------------------------------------------------------------------------------------- planning
def test_trial_counts_default_per_ruleset():
    assert resolve_trials(_spec(trials=None)) == 5
    assert resolve_trials(_spec(trials=None, ruleset="self")) == 1
    assert resolve_trials(_spec(trials=3.0)) == 3


@pytest.mark.parametrize("kw,message", [
    ({"ruleset": "both"}, "unknown ruleset 'both'; choose one of: external, self"),
    ({"trials": 0}, f"--trials must be an integer >= 1 and <= {MAX_PLANNED_TRIALS}, got 0"),
    ({"trials": MAX_PLANNED_TRIALS + 1}, "--trials must be an integer >= 1 and <= 100000"),
    ({"studies": 0}, "--studies must be an integer >= 1 and <= 100000, got 0"),
    ({"seed": -1}, f"--seed must be an integer >= 0 and <= {MAX_SEED}, got -1"),
    ({"trials": 1000, "studies": 101}, "1000 trials x 101 studies x 1 submissions = 101000 trials; "
                                       "a tune plans at most 100000"),
    ({"trials": 1000, "studies": 51, "submissions": ("a", "b")}, "1000 trials x 51 studies x 2 submissions"),
    ({"ruleset": "self", "trials": 2}, "the self-tuning ruleset runs one trial per study; drop --trials or use "
                                       "--trials 1"),
    ({"ruleset": "self", "search_space": Path("s.json")}, "the self-tuning ruleset takes no search space"),
    ({"ruleset": "self", "budget_multiplier": 0.0}, "--budget-multiplier must be a finite number > 0 and <= 1e+06"),
    ({"ruleset": "self", "budget_multiplier": 2e6}, "--budget-multiplier must be a finite number"),
    ({"ruleset": "self", "budget_multiplier": 1e6 + 0.5}, "--budget-multiplier must be a finite number"),
])
def test_bad_tune_counts_are_named(kw, message):
    with pytest.raises(UsageError) as info:
        resolve_trials(_spec(**kw))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("jobs", [0, 1025])
def test_bad_jobs_are_named(jobs):
    with pytest.raises(UsageError) as info:
        Execution(jobs=jobs).checked()
    assert str(info.value) == f"--jobs must be an integer >= 1 and <= 1024, got {jobs}"


def test_edges_of_the_counts_are_accepted():
    assert resolve_trials(_spec(trials=1000, studies=100)) == 1000  # exactly the planned maximum
    assert resolve_trials(_spec(trials=1000, studies=100, submissions=())) == 1000  # counted as one submission
    assert resolve_trials(_spec(seed=MAX_SEED)) == 1
    assert Execution(jobs=1024).checked().jobs == 1024
    assert resolve_trials(_spec(ruleset="self", budget_multiplier=1e6)) == 1
    assert resolve_trials(_spec(trials=1000, budget_multiplier=0.0)) == 1000  # the multiplier is self-tuning's only


def test_plan_orders_by_study_trial_submission_with_halton_points():
    subs = [load_submission("adamw"), load_submission("sgd")]
    cells = plan(_spec(submissions=("adamw", "sgd"), trials=2, studies=2, seed=5), subs)
    assert [(c.study, c.trial, c.submission) for c in cells] == [
        (f"study-{k}", str(i), s) for k in range(2) for i in range(2) for s in ("adamw", "sgd")]
    assert [c.seed for c in cells] == [trial_seed(5, k, i) for k in range(2) for i in range(2) for _ in range(2)]
    space = load_space(None, subs[0])
    for k in range(2):
        u = halton_points(2, len(space.dims), seed=study_seed(5, k))
        mine = [dict(c.hparams) for c in cells if c.submission == "adamw" and c.study == f"study-{k}"]
        assert mine == [space.point([float(x) for x in row]) for row in u]


def test_fixed_configurations(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps([{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}]))
    cells = plan(_spec(trials=2, studies=2, search_space=path), [load_submission("adamw")])
    assert [dict(c.hparams) for c in cells] == [{"lr": 0.1}, {"lr": 0.2}] * 2
    with pytest.raises(UsageError) as info:
        plan(_spec(trials=4, search_space=path), [load_submission("adamw")])
    assert str(info.value) == "--trials 4 but the search space lists only 3 configurations"
    path.write_text(json.dumps([{"lr": 0.1}, {"nope": 1}]))
    with pytest.raises(UsageError, match="^submission 'adamw' has no hyperparameter nope; it accepts: "):
        plan(_spec(trials=1, search_space=path), [load_submission("adamw")])


def test_self_tuning_plans_every_submission_at_its_defaults():
    cells = plan(_spec(ruleset="self", trials=None, studies=2, submissions=("adamw", "sgd")),
                 [load_submission("adamw"), load_submission("sgd")])
    assert [(c.study, c.submission, dict(c.hparams)) for c in cells] == [
        ("study-0", "adamw", {}), ("study-0", "sgd", {}), ("study-1", "adamw", {}), ("study-1", "sgd", {})]


def test_tune_runs_at_the_size_asked_for(results):
    out = tune(_spec(trial=TrialConfig(size="small", max_steps=2, eval_every_steps=2)), results_dir=results)
    assert len(out.finished) == 1 and read_results(results).trials.iloc[0]["size"] == "small"


def test_search_space_sources():
    sub = load_submission("torch.optim:SGD")  # an optimizer class: no search space of its own
    with pytest.raises(UsageError) as info:
        load_space(None, sub)
    assert str(info.value) == ("submission 'torch.optim:SGD' has no search space of its own; "
                               "pass --search-space FILE")
    empty = Loaded(name="empty", obj=type("S", (), {"search_space": lambda self: {}})(), origin=sub.origin)
    with pytest.raises(UsageError, match=r"^search space of 'empty': expected a JSON object"):
        load_space(None, empty)


def test_a_search_space_file_is_named_in_its_errors(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"lr": {"min": 2, "max": 1}}))
    with pytest.raises(UsageError, match=rf"^{path}: 'lr' needs min <= max"):
        load_space(path, load_submission("adamw"))


def test_self_tuning_budget():
    size = load_workload("linreg").obj.sizes["tiny"]
    b = effective_budget(size, {"max_steps": 101}, ruleset="self", multiplier=1.5)
    assert (b.max_steps, b.max_seconds) == (152, size.budget.max_seconds * 1.5)  # steps round up
    b = effective_budget(size, {"max_seconds": 2.0}, ruleset="external", multiplier=1.5)
    assert (b.max_steps, b.max_seconds) == (size.budget.max_steps, 2.0)
    from dataclasses import replace

    from optbench.api import Budget

    only_steps = replace(size, budget=Budget(max_steps=10))
    b = effective_budget(only_steps, {}, ruleset="self", multiplier=2.0)
    assert (b.max_steps, b.max_seconds) == (20, None)
    only_seconds = replace(size, budget=Budget(max_seconds=10.0))
    b = effective_budget(only_seconds, {}, ruleset="self", multiplier=2.0)
    assert (b.max_steps, b.max_seconds) == (None, 20.0)


def test_cores_is_this_process_affinity():
    assert cores() == len(os.sched_getaffinity(0)) >= 1


# ------------------------------------------------------------------------------------------------------ store
def test_recorded_reads_footers_and_filters(results):
    out = tune(_spec(seed=2, trial=TrialConfig(**TINY)), results_dir=results)
    (done,) = [d for _, d in out.finished]
    (identity,) = [p.name.removesuffix(".done") for p in (results / ".claims").glob("*.done")]
    found = recorded(results)
    rec = read_results(results).trials.iloc[0]
    key = (rec["workload"], rec["size"], rec["submission"], rec["study"], rec["trial"], int(rec["seed"]),
           rec["hparams"], float(rec["target"]))
    assert found == ({identity: done.path}, {key: (10, 60.0)})
    assert recorded(results / "missing") == ({}, {})
    # an interrupted copy, another size's trial, a damaged file and a FIFO are not recorded trials (the other size
    # is a trial of its own); named to sort before the real file, so a scan that stopped at the first would miss it
    table = pq.read_table(done.path)
    meta = json.loads(table.schema.metadata[b"optbench"])
    for name, changed in (("0a.parquet", {"outcome": "interrupted"}), ("0b.parquet", {"size": "small"})):
        pq.write_table(table.replace_schema_metadata({b"optbench": json.dumps({**meta, "run_id": name, **changed})}),
                       done.path.parent / name)
    (done.path.parent / "0c.parquet").write_bytes(b"junk")
    os.mkfifo(done.path.parent / "0d.parquet")
    ids, budgets = recorded(results)
    assert ids[identity] == done.path and len(ids) == 2 and key in budgets and len(budgets) == 2
    assert (done.path.parent / "0a.parquet") not in ids.values()


# ---------------------------------------------------------------------------------------------------- running
def test_tune_reports_plans_and_results_and_skips_on_rerun(results):
    notes = Notes()
    spec = _spec(trials=2, seed=4, trial=TrialConfig(**TINY))
    out = tune(spec, results_dir=results, reporter=notes)
    assert notes.notes == ["2 trials planned, 0 already recorded, 2 to run"]
    assert notes.done == list(out.finished) and [p for p, _ in notes.done] == list(out.planned)
    assert not notes.crashes and not out.crashed
    for _, d in out.finished:  # each claim became a marker naming its result file
        (marker,) = [m for m in (results / ".claims").glob("*.done") if json.loads(m.read_text())["result"] ==
                     str(d.path)]
    for p, d in out.finished:
        assert d.outcome == "missed" and d.metric_name == "excess_risk" and d.path.exists()
        assert d.time_to_target is None and d.steps_to_target is None
        assert d.best_metric == read_results(results).trials.set_index("trial").loc[p.trial, "best_metric"]
    again = Notes()
    out2 = tune(spec, results_dir=results, reporter=again)
    assert again.notes == ["2 trials planned, 2 already recorded, 0 to run"] and out2.skipped == out.planned
    assert not out2.finished and again.done == []


def test_a_reached_trial_reports_its_target(results):
    out = tune(_spec(submissions=("sgd",), trials=1, trial=TrialConfig(**{"max_steps": 2000, "eval_every_steps": 100})),
               results_dir=results)
    ((_, d),) = out.finished
    rec = read_results(results).trials.iloc[0]
    assert d.outcome == rec["outcome"] == "reached"
    assert d.time_to_target == rec["time_to_target"] > 0 and d.steps_to_target == rec["steps_to_target"] > 0


def test_another_budget_for_a_recorded_trial_is_refused(results):
    tune(_spec(seed=6, trial=TrialConfig(**TINY)), results_dir=results)
    with pytest.raises(UsageError) as info:
        tune(_spec(seed=6, trial=TrialConfig(**{**TINY, "max_steps": 11})), results_dir=results)
    assert str(info.value).startswith(f"{results} already holds adamw study-0 trial 0 with another budget (10, 60.0)")


def test_no_submission_is_a_usage_error(results):
    with pytest.raises(UsageError, match="^name at least one submission with --opt$"):
        tune(_spec(submissions=()), results_dir=results)


def test_repeated_submissions_are_tuned_once(results):
    out = tune(_spec(submissions=("adamw", "adamw"), trial=TrialConfig(**TINY)), results_dir=results)
    assert len(out.planned) == 1 and len(out.finished) == 1


def test_self_tuning_runs_defaults_under_the_longer_budget(results):
    out = tune(_spec(ruleset="self", submissions=("sgd",), trials=None, budget_multiplier=2.0,
                     trial=TrialConfig(**{"max_steps": 5, "eval_every_steps": 5})), results_dir=results)
    rec = read_results(results).trials.iloc[0]
    assert len(out.finished) == 1 and rec["max_steps"] == 10 and rec["max_seconds"] == 120.0
    assert json.loads(rec["hparams"]) == json.loads(json.dumps(dict(load_submission("sgd").obj.defaults)))


def test_a_harness_failure_is_a_crash_and_the_tune_goes_on(results, monkeypatch):
    from optbench.engine import runner

    real = runner.run_prepared
    calls = []

    def flaky(prep, **kw):  # the harness around the trial fails once (not the trial: that would be an outcome)
        calls.append(prep.trial)
        if len(calls) == 1:
            raise OSError("disk gone")
        return real(prep, **kw)

    monkeypatch.setattr(runner, "run_prepared", flaky)
    notes = Notes()
    out = tune(_spec(trials=2, trial=TrialConfig(**TINY)), results_dir=results, reporter=notes)
    assert [(p.trial, why) for p, why in out.crashed] == [("0", "OSError: disk gone")]
    assert notes.crashes == list(out.crashed) and [p.trial for p, _ in out.finished] == ["1"]
    assert len(read_results(results).trials) == 1
    assert DIED.startswith("its worker process died")


def test_a_usage_error_while_running_stops_the_tune(results, monkeypatch):
    from optbench.engine import runner

    def refuse(prep, **kw):
        raise UsageError("no room")

    monkeypatch.setattr(runner, "run_prepared", refuse)
    with pytest.raises(UsageError, match="^no room$"):
        tune(_spec(trials=2, trial=TrialConfig(**TINY)), results_dir=results)


def test_a_trial_claimed_elsewhere_is_skipped_and_said(results):
    from optbench.sweep import claims
    from optbench.engine.prepared import TrialConfig, prepare

    spec = _spec(trials=1, seed=8, trial=TrialConfig(**TINY))
    (cell,) = plan(spec, [load_submission("adamw")])
    prep = prepare(load_workload("linreg"), load_submission("adamw"),
                   TrialConfig(hparams=dict(cell.hparams), seed=cell.seed, study=cell.study, trial=cell.trial,
                               **TINY), results_dir=results)
    notes = Notes()
    with claims.claimed(results, prep.identity()) as held:
        assert held is not None
        out = tune(spec, results_dir=results, reporter=notes)
    assert out.skipped == out.planned and not out.finished and not out.crashed
    assert notes.notes[-1] == "1 trials were claimed or finished by another process meanwhile"
    assert not list(results.rglob("*.parquet"))
