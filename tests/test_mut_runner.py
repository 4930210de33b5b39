"""The runner's contract, pinned closely enough that mutation testing (benchmarks/mutation.py) finds no gap.

Every trial here is linreg at d = 64 with a few dozen steps or fewer (well under a second each). The workloads and
submissions below are real plugins that each expose one harness duty: a task that checks, inside its own calls, the
state the harness promises (training mode, no stale gradients, grad mode, the derived seeds); a workload whose
metric is maximised; submissions whose batch size, closure use or eval-parameter swap is observable. Expectations
come from the documented rules (README, "Timing rules" and "Results"), not from the runner's own output.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from torch import nn

from optbench import SCHEMA_VERSION
from optbench.api import Capability, Goal, Metric, SubmissionSpec
from optbench.errors import UsageError
from optbench.plugins.registry import Loaded, Origin, load_submission
from optbench.store.reader import read_results
from optbench.store.records import TRIAL_COLUMNS
from optbench.engine.runner import TrialConfig, TrialTimeout, classify, derive_seed, run_trial
from optbench_workloads.linreg import LinReg, LinRegTask
from tests.plugins.bad_optimizers import _Averaging

FAULTY = Path(__file__).parent / "plugins" / "faulty.py"
ORIGIN = Origin(source="module", distribution="mutdist", version="1.2")
SGD = {"lr": 1e-2, "schedule": "constant", "warmup_frac": 0.0}
TINY = {**LinReg.sizes["tiny"].options, "dim": 64}


# ----------------------------------------------------------------------------------------------- test plugins
class StrictTask(LinRegTask):
    """linreg that checks the harness's promises from inside its own calls (a broken promise is an error outcome)."""

    def __init__(self, size, device, seed: int) -> None:
        super().__init__(size, device)
        self.seed, self.losses, self.sampled, self.evals = seed, 0, 0, 0

    def init_model(self, generator):
        assert generator.initial_seed() == derive_seed(self.seed, "init")
        assert torch.initial_seed() == derive_seed(self.seed, "torch")
        return super().init_model(generator)

    def next_batch(self, batch_size, generator):
        assert generator.initial_seed() == derive_seed(self.seed, "data")
        return super().next_batch(batch_size, generator)

    def loss(self, model, batch):
        self.losses += 1
        assert type(model) is nn.Linear  # not compiled unless asked
        assert model.training and torch.is_grad_enabled()
        assert all(p.grad is None for p in model.parameters())  # the harness zeroes gradients to None
        return super().loss(model, batch)

    def sampled_loss(self, model, batch, generator):
        self.sampled += 1
        assert generator.initial_seed() == derive_seed(self.seed, "sample")
        return super().sampled_loss(model, batch, generator)

    def evaluate(self, model):
        self.evals += 1
        assert not model.training and not torch.is_grad_enabled()
        return super().evaluate(model)


class Variant(LinReg):
    """linreg at d = 64 with its own name, target and task."""

    def __init__(self, name: str, make_task, target: float = 1e-6, metric: Metric | None = None) -> None:
        self.name, self.make_task = name, make_task
        self.metric = metric or LinReg.metric
        self.sizes = {"tiny": replace(LinReg.sizes["tiny"], options=TINY, target=target)}
        self.setups: list[tuple] = []

    def setup(self, size, *, device, data_dir=None):
        assert size is self.sizes["tiny"] and isinstance(device, torch.device)
        self.setups.append((device, data_dir))
        return self.make_task(size, device)


class _ScriptedTask(LinRegTask):
    """linreg whose loss value (from ``losses``, by call) and metric (``metric(evals)``) are set exactly."""

    def __init__(self, size, device, losses=None, metric=None) -> None:
        super().__init__(size, device)
        self.script, self.metric_of, self.calls, self.evals = losses, metric, 0, 0

    def loss(self, model, batch):
        raw = super().loss(model, batch)
        self.calls += 1
        if self.script is None:
            return raw
        return raw / raw.detach() * self.script(self.calls)

    def evaluate(self, model):
        self.evals += 1
        out = dict(super().evaluate(model))
        return out if self.metric_of is None else self.metric_of(self.evals, out)


class _NegRiskTask(LinRegTask):
    def evaluate(self, model):
        out = dict(super().evaluate(model))
        return {**out, "neg_risk": -out["excess_risk"]}


def wl(variant: Variant) -> Loaded:
    return Loaded(name=variant.name, obj=variant, origin=ORIGIN)


def sub(name: str, factory, capabilities=(), defaults=None) -> Loaded:
    spec = SubmissionSpec(name=name, factory=factory, defaults=defaults or {"lr": 1e-2},
                          capabilities=frozenset(capabilities))
    return Loaded(name=name, obj=spec, origin=ORIGIN)


class Recorder:
    """An observer that keeps every call (the CLI's progress bar sees the same)."""

    def __init__(self) -> None:
        self.started_with, self.steps, self.evals = None, [], []

    def started(self, *, max_steps, max_seconds):
        self.started_with = (max_steps, max_seconds)

    def stepped(self, *, step, loss, timed_seconds):
        self.steps.append((step, loss, timed_seconds))

    def evaluated(self, row, *, reached):
        self.evals.append((row, reached))


def strict(seed: int = 0, target: float = 1e-6):
    tasks = []

    def make(size, device):
        tasks.append(StrictTask(size, device, seed))
        return tasks[-1]

    return wl(Variant("strict", make, target=target)), tasks


def run(workload, submission, results, observer=None, **cfg):
    """Run one trial. A wall-clock limit far above the trial's second or less turns a harness that never stops
    (a broken budget or loop) into a failed test quickly, instead of a hang."""
    cfg.setdefault("timeout", 20.0)
    return run_trial(workload, submission, TrialConfig(**cfg), results_dir=results, observer=observer)


def sgd_plain(model, hp, info):
    return torch.optim.SGD(model.parameters(), lr=hp["lr"])


# --------------------------------------------------------------------------------------------------- rows
def test_rows_counters_and_observer_follow_the_steps(results):
    w, tasks = strict(seed=3)
    obs = Recorder()
    start = time.perf_counter()
    r = run(w, load_submission("sgd"), results, obs, hparams=SGD, seed=3, max_steps=12, eval_every_steps=5)
    elapsed = time.perf_counter() - start
    assert r.record.outcome == "missed" and r.record.error is None
    rows = r.rows
    assert [row.step for row in rows] == [0, 5, 10, 12]
    assert obs.started_with == (12, 60.0)
    assert [s for s, _, _ in obs.steps] == list(range(1, 13))
    losses = [loss for _, loss, _ in obs.steps]
    assert tasks[0].losses == 12 and tasks[0].evals == 4
    assert math.isnan(rows[0].train_loss)
    for prev, row in zip(rows, rows[1:]):  # the mean training loss since the previous evaluation
        assert row.train_loss == pytest.approx(sum(losses[prev.step:row.step]) / (row.step - prev.step), rel=1e-12)
    for row in rows:
        assert row.examples == row.tokens == 32 * row.step and row.batch_size == 32
        assert row.learning_rate == 1e-2
        assert json.loads(row.metrics_json) == {"excess_risk": row.metric_value,
                                                 "val_loss": pytest.approx(0.5 * (row.metric_value + 0.25))}
        assert elapsed >= row.wall_seconds >= row.timed_seconds + row.eval_seconds > 0  # since the trial began
    assert rows[0].timed_seconds == 0.0
    assert all(b.timed_seconds > a.timed_seconds and b.eval_seconds > a.eval_seconds for a, b in zip(rows, rows[1:]))
    assert [t for _, _, t in obs.steps][4] == rows[1].timed_seconds  # the clock at step 5 is the row's
    assert [(row, hit) for row, hit in obs.evals] == [(row, False) for row in rows]
    assert rows[1].metric_value < rows[0].metric_value == pytest.approx(1.0)  # it trained


def test_record_holds_what_was_run(results):
    w, _ = strict(seed=4)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    r = run(w, load_submission("sgd"), results, hparams=SGD, seed=4, study="s1", trial="7", max_steps=6,
            eval_every_steps=3)
    rec = r.record
    assert rec.schema_version == SCHEMA_VERSION
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", rec.run_id)
    created = datetime.fromisoformat(rec.created_at)
    assert created.tzinfo is not None and before <= created <= before + timedelta(seconds=60)
    assert rec.run_id[:15] == created.strftime("%Y%m%dT%H%M%S")
    assert (rec.workload, rec.size, rec.submission) == ("strict", "tiny", "sgd")
    assert rec.workload_origin == "mutdist==1.2" and rec.submission_origin.startswith("optbench==")
    assert json.loads(rec.hparams)["lr"] == 1e-2
    assert (rec.seed, rec.study, rec.trial, rec.outcome) == (4, "s1", "7", "missed")
    assert (rec.metric_name, rec.metric_goal, rec.target) == ("excess_risk", "min", 1e-6)
    assert rec.time_to_target is rec.steps_to_target is rec.examples_to_target is rec.tokens_to_target is None
    assert rec.best_metric == min(row.metric_value for row in r.rows)
    assert (rec.total_steps, rec.max_steps, rec.max_seconds) == (6, 6, 60.0)
    assert rec.total_timed_seconds == r.rows[-1].timed_seconds > 0
    assert rec.compiled is False and rec.device == "cpu"
    stored = read_results(results).trials.iloc[0]
    for col in ("run_id", "created_at", "workload", "submission", "hparams", "study", "trial", "outcome"):
        assert stored[col] == getattr(rec, col)
    assert r.path == results / "strict-tiny" / "sgd" / f"{rec.run_id}.parquet"
    assert set(TRIAL_COLUMNS) <= set(stored.index)


def test_reached_trial_records_the_first_row_at_the_target(results):
    w, _ = strict(target=0.45)  # linreg's excess risk at steps 0, 2, 4, 6: 1.0, 0.52, 0.55, 0.40
    obs = Recorder()
    r = run(w, load_submission("sgd"), results, obs, hparams=SGD, max_steps=40, eval_every_steps=2)
    rec, rows = r.record, r.rows
    assert rec.outcome == "reached"
    hit = rows[-1]  # training stops at the first evaluation at the target
    assert hit.metric_value <= 0.45 < min(row.metric_value for row in rows[:-1])
    assert (rec.steps_to_target, rec.time_to_target) == (hit.step, hit.timed_seconds)
    assert rec.examples_to_target == rec.tokens_to_target == 32 * hit.step
    assert rec.total_steps == hit.step and rec.best_metric == hit.metric_value
    assert obs.evals[-1] == (hit, True) and all(not reached for _, reached in obs.evals[:-1])


def test_target_met_at_step_0_stops_before_any_step(results):
    w, tasks = strict(target=2.0)  # the excess risk of w = 0 is 1
    obs = Recorder()
    r = run(w, load_submission("sgd"), results, obs, hparams=SGD, max_steps=20)
    assert r.record.outcome == "reached" and [row.step for row in r.rows] == [0]
    assert (r.record.steps_to_target, r.record.time_to_target, r.record.total_steps) == (0, 0.0, 0)
    assert obs.steps == [] and tasks[0].losses == 0


def test_a_maximised_metric_is_reached_and_scored_upwards(results):
    metric = Metric(name="neg_risk", goal=Goal.MAX)
    missed = run(wl(Variant("negrisk", _NegRiskTask, target=-1e-6, metric=metric)), load_submission("sgd"), results,
                 hparams=SGD, max_steps=10, eval_every_steps=5)
    values = [row.metric_value for row in missed.rows]
    assert missed.record.outcome == "missed" and missed.record.metric_goal == "max"
    assert missed.record.best_metric == max(values) > min(values)
    hit = run(wl(Variant("negrisk", _NegRiskTask, target=-0.45, metric=metric)), load_submission("sgd"), results,
              hparams=SGD, max_steps=40, eval_every_steps=2)
    assert hit.record.outcome == "reached" and hit.record.steps_to_target == hit.rows[-1].step > 0
    assert hit.rows[-1].metric_value >= -0.45 > max(row.metric_value for row in hit.rows[:-1])


class _BareUpdater:
    """An updater with the Optimizer interface but no param_groups (allowed: learning_rate is then NaN)."""

    def __init__(self, model, groups=None):
        self.model = model
        if groups is not None:
            self.param_groups = groups

    @torch.no_grad()
    def step(self, closure=None):
        for p in self.model.parameters():
            p -= 0.01 * p.grad

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict):
        pass


@pytest.mark.parametrize("groups", [None, [], [{"momentum": 0.0}]], ids=["none", "empty", "no-lr"])
def test_an_updater_without_a_learning_rate_records_nan(results, groups):
    r = run(strict()[0], sub("bare", lambda m, hp, i: _BareUpdater(m, groups)), results, max_steps=2,
            eval_every_steps=1)
    assert r.record.outcome == "missed", r.record.error
    assert len(r.rows) == 3 and all(math.isnan(row.learning_rate) for row in r.rows)
    assert r.rows[-1].metric_value < r.rows[0].metric_value  # it did train


def test_budget_in_timed_seconds_alone_ends_the_trial(results):
    r = run(strict()[0], load_submission("sgd"), results, hparams=SGD, max_steps=10**7, max_seconds=0.2,
            eval_every_steps=10**6)
    assert r.record.outcome == "missed" and r.record.error is None
    assert 0.2 <= r.record.total_timed_seconds < 5 and r.rows[-1].step == r.record.total_steps < 10**7


def test_learning_rate_is_the_first_groups(results):
    def two_groups(model, hp, info):
        return torch.optim.SGD([{"params": model.parameters(), "lr": 0.003}, {"params": [], "lr": 0.5}])

    r = run(strict()[0], sub("two", two_groups), results, max_steps=2, eval_every_steps=1)
    assert [row.learning_rate for row in r.rows] == [0.003] * 3


# ------------------------------------------------------------------------------------------- capabilities
class _ClosureSGD(torch.optim.SGD):
    def __init__(self, params, lr, sampled):
        super().__init__(params, lr=lr)
        self.sampled, self.closure_losses = sampled, []

    def step(self, closure=None):
        assert closure is not None
        with torch.no_grad():  # as torch's own closure optimizers call it: the closure must re-enable grad
            loss = closure(sampled=self.sampled) if self.sampled else closure()
        assert not loss.requires_grad and loss.ndim == 0
        assert all(p.grad is not None for g in self.param_groups for p in g["params"])
        self.closure_losses.append(float(loss))
        return super().step()


@pytest.mark.parametrize("cap,sampled", [(Capability.CLOSURE, False), (Capability.SAMPLED_LOSS, True)])
def test_closure_reruns_the_loss_on_the_same_batch(results, cap, sampled):
    made = []

    def factory(model, hp, info):
        made.append(_ClosureSGD(model.parameters(), hp["lr"], sampled))
        return made[-1]

    obs = Recorder()
    w, tasks = strict()
    r = run(w, sub("closure", factory, {cap}), results, obs, max_steps=4, eval_every_steps=2)
    assert r.record.outcome == "missed", r.record.error
    # the step's loss, then the closure's (on sampled labels for SAMPLED_LOSS)
    assert (tasks[0].losses, tasks[0].sampled) == ((4, 4) if sampled else (8, 0))
    if not sampled:  # same batch, same parameters: the closure's loss is the step's loss
        assert made[0].closure_losses == pytest.approx([loss for _, loss, _ in obs.steps], rel=1e-6)


def test_plain_submissions_get_no_closure(results, monkeypatch):
    from optbench.engine.loop import TrialLoop

    monkeypatch.setattr(TrialLoop, "count_flops", lambda self: None)  # its untimed step on a copy is not the trial's
    seen = []

    class NoClosure(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(closure)
            return super().step()

    r = run(strict()[0], sub("plain", lambda m, hp, i: NoClosure(m.parameters(), lr=hp["lr"])), results,
            max_steps=3, eval_every_steps=3)
    assert r.record.outcome == "missed" and seen == [None, None, None]


class _Ramp(torch.optim.SGD):
    sizes: dict = {}

    def batch_size(self, step):
        return self.sizes.get(step, 8)


@pytest.mark.parametrize("bad", [0, -1, 2**31, True, 8.0, "8", None])
def test_a_bad_batch_size_from_the_submission_is_an_error(results, bad):
    class Bad(_Ramp):
        sizes = {3: bad}

    r = run(strict()[0], sub("ramp", lambda m, hp, i: Bad(m.parameters(), lr=hp["lr"]), {Capability.BATCH_SCHEDULE}),
            results, max_steps=5, eval_every_steps=1)
    assert r.record.outcome == "error" and r.record.total_steps == 2
    assert f"batch_size() returned {bad!r}; expected an int in 1..2147483647" in r.record.error


class _CappedTask(LinRegTask):
    """Hands out at most 4 examples whatever size is asked (so the largest legal batch size can be asked for)."""

    def next_batch(self, batch_size, generator):
        return super().next_batch(min(batch_size, 4), generator)


def test_the_largest_batch_size_is_accepted(results):
    class Huge(_Ramp):
        sizes = {1: 2**31 - 1}

    r = run(wl(Variant("capped", _CappedTask)), sub("ramp", lambda m, hp, i: Huge(m.parameters(), lr=hp["lr"]),
                                                     {Capability.BATCH_SCHEDULE}), results, max_steps=2,
            eval_every_steps=1)
    assert r.record.outcome == "missed", r.record.error
    assert [row.batch_size for row in r.rows] == [2**31 - 1, 2**31 - 1, 8]  # what was asked; 4 examples given
    assert [row.examples for row in r.rows] == [0, 4, 8]


def test_a_single_warmup_step_runs_off_the_clock_and_leaves_no_trace(results):
    w, tasks = strict(seed=2)
    plain = run(w, load_submission("sgd"), results, hparams=SGD, seed=2, max_steps=4, eval_every_steps=2)
    warmed = run(w, load_submission("sgd"), results, hparams=SGD, seed=2, max_steps=4, eval_every_steps=2,
                 warmup_steps=1)
    assert (tasks[0].losses, tasks[1].losses) == (4, 5)  # the warm-up step ran
    assert [row.train_loss for row in warmed.rows[1:]] == [row.train_loss for row in plain.rows[1:]]
    assert [row.metric_value for row in warmed.rows] == [row.metric_value for row in plain.rows]
    assert warmed.rows[0].timed_seconds == 0.0 and warmed.record.total_steps == 4


def test_batch_size_extremes_are_accepted(results):
    class Edge(_Ramp):
        sizes = {1: 1, 2: 3}

    r = run(strict()[0], sub("ramp", lambda m, hp, i: Edge(m.parameters(), lr=hp["lr"]), {Capability.BATCH_SCHEDULE}),
            results, max_steps=3, eval_every_steps=1)
    assert r.record.outcome == "missed", r.record.error
    assert [(row.examples, row.batch_size) for row in r.rows] == [(0, 1), (1, 1), (4, 3), (12, 8)]


class _SlowSwap(_Averaging):
    """Evaluates at w = 0 (bad_optimizers' swap); entering and leaving the swap each take SWAP seconds, which the
    harness must charge to the timed clock (AlgoPerf's prepare_for_eval)."""

    SWAP = 0.1

    def eval_params(self):
        import contextlib

        @contextlib.contextmanager
        def swap():
            time.sleep(self.SWAP)
            with super(_SlowSwap, self).eval_params():
                yield
            time.sleep(self.SWAP)

        return swap()


def test_eval_params_swap_is_timed_and_restored(results):
    obs = Recorder()
    r = run(strict()[0], sub("swap", lambda m, hp, i: _SlowSwap(m.parameters(), lr=hp["lr"]),
                             {Capability.EVAL_PARAMS}), results, obs, max_steps=2, eval_every_steps=1)
    assert [row.metric_value for row in r.rows] == pytest.approx([1.0] * 3)  # evaluated at w = 0
    assert r.rows[-1].train_loss < r.rows[1].train_loss  # training went on from the restored weights
    for k, row in enumerate(r.rows):  # each evaluation's swap (enter + exit) is timed, the evaluation is not
        assert row.timed_seconds >= 2 * k * _SlowSwap.SWAP and row.eval_seconds < 0.1 * (k + 1) + 0.5
    assert r.rows[0].timed_seconds >= _SlowSwap.SWAP  # step 0: only the swap's entry is timed yet
    assert r.record.total_timed_seconds >= 5 * _SlowSwap.SWAP


# --------------------------------------------------------------------------------------------------- failures
def test_setup_gets_the_device_and_data_folder(results, tmp_path):
    variant = Variant("setup", LinRegTask)
    run(wl(variant), load_submission("sgd"), results, hparams=SGD, max_steps=1, data_dir=tmp_path / "data")
    run(wl(variant), load_submission("sgd"), results, hparams=SGD, max_steps=1)
    assert variant.setups == [(torch.device("cpu"), tmp_path / "data"), (torch.device("cpu"), None)]


def test_a_failed_setup_records_no_steps_and_no_time(results, bad_plugins):
    from optbench.plugins.registry import load_workload

    r = run(load_workload(f"{bad_plugins}:BrokenWorkload"), load_submission("sgd"), results, hparams=SGD)
    rec = r.record
    assert rec.outcome == "error" and r.rows == [] and "KeyError" in rec.error
    assert (rec.total_steps, rec.total_timed_seconds, rec.best_metric) == (0, 0.0, None)


def test_ctrl_c_records_its_reason_and_is_raised_again(results):
    with pytest.raises(KeyboardInterrupt):
        run(strict()[0], load_submission(f"{FAULTY}:Interrupting"), results, hparams={"after": 2}, max_steps=9)
    (rec,) = read_results(results).trials.itertuples()
    assert (rec.outcome, rec.error, rec.total_steps) == ("interrupted", "stopped by the user (Ctrl-C)", 1)


class _TypeTask(LinRegTask):
    """Records the type of model each call gets: the training forward and the evaluation."""

    seen: list

    def loss(self, model, batch):
        compiled = getattr(model, "compiled", None)  # the compiled module, inside its dynamic-batch wrapper
        self.seen.append(("loss", type(compiled if compiled is not None else model).__name__))
        return super().loss(model, batch)

    def evaluate(self, model):
        self.seen.append(("evaluate", type(model).__name__))
        return super().evaluate(model)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="inductor needs a C++ compiler")
def test_compile_sends_only_the_training_forward_through_torch_compile(results):
    seen: list = []
    task = type("T", (_TypeTask,), {"seen": seen})
    r = run(wl(Variant("compiled", task)), load_submission("sgd"), results, hparams=SGD, max_steps=2,
            eval_every_steps=2, compile=True)
    assert r.record.outcome == "missed" and r.record.compiled is True, r.record.error
    assert seen == [("evaluate", "Linear"), ("loss", "OptimizedModule"), ("loss", "OptimizedModule"),
                    ("evaluate", "Linear")]
    assert read_results(results).trials.iloc[0]["compiled"] == True  # noqa: E712 - a numpy bool


def test_classify_names_memory_errors_oom():
    class OutOfMemoryError(Exception):  # matched by name, as torch's CUDA and MPS errors are
        pass

    assert classify(MemoryError()) == "oom"
    assert classify(OutOfMemoryError()) == "oom"
    assert classify(RuntimeError("CUDA Out Of Memory while allocating")) == "oom"
    assert classify(RuntimeError("something else")) == "error"
    assert classify(ValueError("out of memory")) == "error"  # only RuntimeErrors carry it in their text
    assert classify(SystemExit(3)) == "error"


def test_a_missing_metric_is_an_error(results):
    task = lambda size, device: _ScriptedTask(size, device, metric=lambda n, out: {"val_loss": out["val_loss"]})
    r = run(wl(Variant("nometric", task)), load_submission("sgd"), results, hparams=SGD, max_steps=3)
    assert r.record.outcome == "error" and r.rows == []
    assert "workload 'nometric' evaluate() returned no 'excess_risk'" in r.record.error


def test_a_non_finite_validation_metric_is_diverged(results):
    task = lambda size, device: _ScriptedTask(
        size, device, metric=lambda n, out: {**out, "excess_risk": math.nan if n >= 3 else out["excess_risk"]})
    r = run(wl(Variant("nanmetric", task)), load_submission("sgd"), results, hparams=SGD, max_steps=20,
            eval_every_steps=2)
    assert r.record.outcome == "diverged" and r.record.error == "validation excess_risk became nan"
    assert [row.step for row in r.rows] == [0, 2, 4] and r.record.total_steps == 4
    assert r.record.best_metric == min(row.metric_value for row in r.rows[:2])


def test_a_first_loss_of_zero_turns_the_factor_rule_off(results):
    task = lambda size, device: _ScriptedTask(size, device, losses=lambda k: 0.0 if k == 1 else 1e6)
    r = run(wl(Variant("zero", task)), load_submission("sgd"), results, hparams=SGD, max_steps=4, eval_every_steps=4)
    assert r.record.outcome == "missed", r.record.error


@pytest.mark.parametrize("first,later,diverged", [(1.0, 100.0, False), (1.0, 100.5, True), (2.0, 150.0, False),
                                                  (2.0, 201.0, True)])
def test_the_factor_rule_is_strictly_above_factor_times_the_first_loss(results, first, later, diverged):
    task = lambda size, device: _ScriptedTask(size, device, losses=lambda k: first if k == 1 else later)
    r = run(wl(Variant("factor", task)), load_submission("sgd"), results, hparams=SGD, max_steps=3,
            eval_every_steps=3)
    assert r.record.outcome == ("diverged" if diverged else "missed"), r.record.error
    if diverged:
        assert r.record.error == (f"training loss {later:.4g} exceeded 100x its first value {first:.4g} at step 2")


def test_a_non_finite_loss_is_diverged_and_the_end_is_evaluated(results):
    task = lambda size, device: _ScriptedTask(size, device, losses=lambda k: math.inf if k == 3 else 1.0)
    obs = Recorder()
    r = run(wl(Variant("inf", task)), load_submission("sgd"), results, obs, hparams=SGD, max_steps=20,
            eval_every_steps=10)
    assert r.record.outcome == "diverged" and r.record.error == "training loss became inf at step 3"
    assert [row.step for row in r.rows] == [0, 3]  # the final quiet evaluation where the model ended
    assert obs.evals[-1] == (r.rows[-1], False)


def test_a_diverged_trial_has_no_time_to_target_even_if_its_last_evaluation_meets_it(results):
    task = lambda size, device: _ScriptedTask(size, device, losses=lambda k: math.inf if k == 3 else 1.0,
                                              metric=lambda n, out: {**out, "excess_risk": 1.0 if n == 1 else 0.0})
    obs = Recorder()
    r = run(wl(Variant("late", task, target=0.5)), load_submission("sgd"), results, obs, hparams=SGD, max_steps=20,
            eval_every_steps=10)
    rec = r.record
    assert rec.outcome == "diverged" and [row.metric_value for row in r.rows] == [1.0, 0.0]
    assert rec.time_to_target is rec.steps_to_target is rec.examples_to_target is rec.tokens_to_target is None
    assert rec.best_metric == 0.0 and [hit for _, hit in obs.evals] == [False, False]


def test_divergence_is_kept_when_the_final_evaluation_fails(results):
    def metric(n, out):
        if n > 1:
            raise RuntimeError("cannot evaluate a broken model")
        return out

    task = lambda size, device: _ScriptedTask(size, device, losses=lambda k: math.nan if k == 2 else 1.0,
                                              metric=metric)
    r = run(wl(Variant("nan", task)), load_submission("sgd"), results, hparams=SGD, max_steps=20)
    assert r.record.outcome == "diverged" and "nan at step 2" in r.record.error
    assert [row.step for row in r.rows] == [0]


def test_a_step_past_the_deadline_is_a_timeout_and_the_alarm_is_restored(results):
    def mine(signum, frame):  # pragma: no cover - must never fire
        raise AssertionError("the trial's alarm outlived it")

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        start = time.perf_counter()
        r = run(strict()[0], load_submission(f"{FAULTY}:Hanging"), results, hparams={"after": 1}, max_steps=20,
                eval_every_steps=10, timeout=0.5)
        elapsed = time.perf_counter() - start
        assert r.record.outcome == "timeout" and r.record.error == "wall-clock limit of 0.5 s exceeded"
        assert r.record.total_steps == 0 and 0.5 <= elapsed < 10  # the first step never returned
        assert signal.getsignal(signal.SIGALRM) is mine and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_outside_the_main_thread_the_deadline_is_checked_between_steps(results):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run(
        strict()[0], load_submission("sgd"), results, hparams=SGD, max_steps=10**7, max_seconds=1000,
        eval_every_steps=10**6, timeout=0.3)))
    start = time.perf_counter()
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert box["r"].record.outcome == "timeout" and 0.3 <= time.perf_counter() - start < 30
    assert box["r"].record.total_steps > 0


class _WrapsTheDeadline(torch.optim.SGD):
    """Turns the deadline into another exception, as torch's C++ calls re-raise errors as RuntimeError."""

    def step(self, closure=None):
        try:
            time.sleep(30)
        except TrialTimeout:
            raise RuntimeError("wrapped by a C++ call") from None


def test_any_failure_past_the_deadline_is_the_timeout(results):
    r = run(strict()[0], sub("wraps", lambda m, hp, i: _WrapsTheDeadline(m.parameters(), lr=hp["lr"])), results,
            max_steps=5, timeout=0.4)
    assert r.record.outcome == "timeout" and "wrapped by a C++ call" in r.record.error


def test_a_failure_before_the_deadline_stays_an_error(results):
    r = run(strict()[0], load_submission(f"{Path(__file__).parent / 'plugins' / 'bad_optimizers.py'}:OOMOptimizer"),
            results, max_steps=5, timeout=60)
    assert r.record.outcome == "oom" and r.record.error.startswith("Traceback")


class _UsageLater(torch.optim.SGD):
    calls = 0

    def step(self, closure=None):
        type(self).calls += 1
        if type(self).calls >= self.when:
            raise UsageError("the plugin said no")
        return super().step()


def test_a_usage_error_once_training_started_is_the_trials_error(results, monkeypatch):
    from optbench.engine.loop import TrialLoop

    monkeypatch.setattr(TrialLoop, "count_flops", lambda self: None)  # its untimed step on a copy is not the trial's

    class Later(_UsageLater):
        when, calls = 2, 0

    r = run(strict()[0], sub("later", lambda m, hp, i: Later(m.parameters(), lr=hp["lr"])), results, max_steps=5)
    assert r.record.outcome == "error" and "the plugin said no" in r.record.error and r.record.total_steps == 1
    assert r.path.exists()


def test_a_usage_error_before_the_first_step_is_raised_and_nothing_written(results):
    class First(_UsageLater):
        when, calls = 1, 0

    with pytest.raises(UsageError, match="the plugin said no"):
        run(strict()[0], sub("first", lambda m, hp, i: First(m.parameters(), lr=hp["lr"])), results, max_steps=5)
    assert not list(results.rglob("*.parquet"))


def _sabotaged(tmp_path: Path, monkeypatch, tmp_dir: Path):
    """A trial whose results folder becomes a file mid-trial, with the data folder's rescue unwritable too (below a
    regular file) and ``tmp_dir`` as the temporary folder (the last rescue)."""
    results = tmp_path / "results"
    results.mkdir()  # Sabotage replaces it by a file mid-trial
    monkeypatch.setenv("OPTBENCH_DATA", str(tmp_path / "file" / "data"))
    monkeypatch.setenv("OPTBENCH_TEST_SABOTAGE", str(results))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_dir))
    return results, lambda: run(strict()[0], load_submission(f"{FAULTY}:Sabotage"), results, hparams={"after": 1},
                                max_steps=4, eval_every_steps=2)


def test_a_result_that_fits_nowhere_is_a_usage_error_naming_the_outcome(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    results, trial = _sabotaged(tmp_path, monkeypatch, tmp_path / "file" / "tmp")
    with pytest.raises(UsageError) as info:
        trial()
    assert re.fullmatch(rf"could not write the result of strict/tiny faulty\.py:Sabotage seed 0 to "
                        rf"{re.escape(repr(str(results)))} \(\[Errno \d+\] .+\) nor to any rescue directory; "
                        rf"outcome missed, best [0-9.e-]+", str(info.value)), str(info.value)


def test_the_last_rescue_is_the_temporary_folder(tmp_path, monkeypatch):
    import os

    (tmp_path / "file").write_text("x")
    results, trial = _sabotaged(tmp_path, monkeypatch, tmp_path / "tmp")
    r = trial()
    kept = tmp_path / "tmp" / f"optbench-rescued-{os.getuid()}"
    assert r.path.is_relative_to(kept) and r.path.exists()
    assert re.fullmatch(rf"could not write to {re.escape(repr(str(results)))} \(\[Errno \d+\] .+\); "
                        rf"the result was kept at {re.escape(repr(str(r.path)))}", r.note), r.note
    assert len(read_results(kept).trials) == 1
