"""The trial runner: trains one (workload, submission, hyperparameters, seed) trial to its target or its budget.

The runner owns the clock (timed: data loading + update steps; untimed: evaluation, logging, checkpointing), the
evaluation schedule, stopping, and the translation of every failure into an outcome recorded as data: a NaN or
exploding loss is ``diverged``, an exception in plugin code ``error`` (traceback kept), running out of memory
``oom``, exceeding the wall-clock limit ``timeout``, spending the budget ``missed``. Bad user input (unknown size,
unavailable device, missing data) is a :class:`~optbench.errors.UsageError` raised before anything runs.

One step (all timed)::

    batch = task.next_batch(batch_size, data_gen)
    loss = task.loss(model, batch); loss.backward()
    updater.step(closure)        # closure only for submissions that declare Capability.CLOSURE / SAMPLED_LOSS
    updater.zero_grad()
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch

from optbench import SCHEMA_VERSION, provenance
from optbench.api import Budget, Capability, EvalPeriod, Size, Submission, Task, TrialInfo, Workload
from optbench.clock import Clock
from optbench.errors import UsageError
from optbench.hparams import merge
from optbench.registry import Loaded
from optbench.results import EvalRow, TrialRecord, write_trial
from optbench.state import TrialState


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """How to run a trial; every ``None`` means "the workload size's own setting".

    Attributes:
      size: size preset name (default: the workload's default size).
      hparams: hyperparameters given by the user (merged over the submission's defaults).
      seed: the trial's seed: model init, data order and any sampling derive from it.
      device: ``cpu``, ``cuda``, ``cuda:1``...
      study, trial: identifiers for the tuning aggregation (best trial per study, median over studies).
      max_steps, max_seconds: budget overrides (timed seconds).
      eval_every_steps, eval_every_seconds: evaluation-period overrides.
      batch_size: batch-size override (a submission with BATCH_SCHEDULE still decides per step).
      timeout: wall-clock limit of the whole trial (evaluation included), outcome ``timeout``.
      divergence_factor: a training loss above this multiple of the first step's loss is ``diverged``.
      warmup_steps: untimed steps run then undone before the clock starts (kernel caches, compilation).
      data_dir: where prepared datasets live.
      checkpoint: if set, the trial's state is saved there at every evaluation (untimed) and a trial started with
        an existing checkpoint resumes from it.
      compile: run the model's forward under ``torch.compile``. Compilation happens in the first steps and is timed
        (as in AlgoPerf), unless ``warmup_steps`` take it off the clock.
    """

    size: str | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    study: str | None = None
    trial: str = "0"
    max_steps: int | None = None
    max_seconds: float | None = None
    eval_every_steps: int | None = None
    eval_every_seconds: float | None = None
    batch_size: int | None = None
    timeout: float | None = None
    divergence_factor: float = 100.0
    warmup_steps: int = 0
    data_dir: Path | None = None
    checkpoint: Path | None = None
    compile: bool = False


class Observer(Protocol):
    """Receives progress (the CLI draws a progress bar from it). All calls are made off the clock."""

    def started(self, *, max_steps: int | None, max_seconds: float | None) -> None: ...

    def stepped(self, *, step: int, loss: float, timed_seconds: float) -> None: ...

    def evaluated(self, row: EvalRow, *, reached: bool) -> None: ...


class _Stop(Exception):
    """Internal: ends the loop with an outcome."""

    def __init__(self, outcome: str, reason: str | None = None) -> None:
        super().__init__(outcome)
        self.outcome, self.reason = outcome, reason


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    record: TrialRecord
    rows: list[EvalRow]
    path: Path


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose ("init", "data"...) derived from the trial's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; an unavailable device is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    return dev


def resolve_size(workload: Workload, name: str | None) -> Size:
    """The size preset called ``name`` (default: the workload's default), else a usage error listing the sizes."""
    name = name or workload.default_size
    if name not in workload.sizes:
        raise UsageError(f"workload {workload.name!r} has no size {name!r}; sizes: {', '.join(workload.sizes)}")
    return workload.sizes[name]


def _budget(size: Size, cfg: TrialConfig) -> Budget:
    if cfg.max_steps is None and cfg.max_seconds is None:
        return size.budget
    return Budget(max_steps=cfg.max_steps if cfg.max_steps is not None else size.budget.max_steps,
                  max_seconds=cfg.max_seconds if cfg.max_seconds is not None else size.budget.max_seconds)


def _period(size: Size, cfg: TrialConfig) -> EvalPeriod:
    if cfg.eval_every_steps is None and cfg.eval_every_seconds is None:
        return size.eval_every
    return EvalPeriod(steps=cfg.eval_every_steps, seconds=cfg.eval_every_seconds)


def classify(exc: BaseException) -> str:
    """``oom`` for out-of-memory errors (CUDA or host), ``error`` for anything else."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "oom"
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return "oom"
    return "error"


class TrialLoop:
    """The loop of one trial; its mutable state lives in :attr:`state` so that it can be saved and restored."""

    def __init__(self, *, task: Task, workload: Workload, submission: Submission, hparams: Mapping[str, Any],
                 info: TrialInfo, budget: Budget, period: EvalPeriod, cfg: TrialConfig, device: torch.device,
                 observer: Observer | None) -> None:
        self.task, self.workload, self.submission = task, workload, submission
        self.info, self.budget, self.period, self.cfg = info, budget, period, cfg
        self.observer = observer
        self.metric = workload.metric
        self.target = workload.sizes[info.size].target
        self.caps = submission.capabilities
        torch.manual_seed(derive_seed(cfg.seed, "torch"))
        model = task.init_model(torch.Generator().manual_seed(derive_seed(cfg.seed, "init")))
        updater = submission.create(model, hparams, info)
        # The submission and the checkpoints see the plain module; only forward passes go through the compiled one.
        self.forward_model = torch.compile(model) if cfg.compile else model
        data_device = device if device.type == "cuda" else torch.device("cpu")
        self.state = TrialState(
            model=model, updater=updater,
            data_gen=torch.Generator(device=data_device).manual_seed(derive_seed(cfg.seed, "data")),
            sample_gen=torch.Generator(device=data_device).manual_seed(derive_seed(cfg.seed, "sample")),
            clock=Clock(device=device),
        )
        self.wall_start = time.perf_counter()

    # ----- one step -------------------------------------------------------------------------------------------
    def batch_size(self) -> int:
        if Capability.BATCH_SCHEDULE in self.caps:
            return int(self.state.updater.batch_size(self.state.counters.step + 1))  # type: ignore[attr-defined]
        return self.info.batch_size

    def _closure(self, batch: Any) -> Callable[..., torch.Tensor]:
        model, task, gen = self.forward_model, self.task, self.state.sample_gen

        def closure(sampled: bool = False) -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = task.sampled_loss(model, batch, gen) if sampled else task.loss(model, batch)
                loss.backward()
            return loss.detach()

        return closure

    def step(self) -> float:
        """One timed update step; returns the training loss."""
        st = self.state
        bs = self.batch_size()
        with st.clock.timing():
            batch = self.task.next_batch(bs, st.data_gen)
            loss = self.task.loss(self.forward_model, batch)
            loss.backward()
            if Capability.CLOSURE in self.caps or Capability.SAMPLED_LOSS in self.caps:
                st.updater.step(self._closure(batch))
            else:
                st.updater.step()
            st.updater.zero_grad(set_to_none=True)
        value = float(loss.detach())
        examples, tokens = self.task.counts(batch)
        c = st.counters
        c.step += 1
        c.examples += examples
        c.tokens += tokens
        c.loss_sum += value
        c.loss_count += 1
        c.last_batch_size = bs
        if c.initial_loss is None:
            c.initial_loss = value
        return value

    # ----- evaluation -----------------------------------------------------------------------------------------
    def eval_due(self) -> bool:
        c, p = self.state.counters, self.period
        if p.steps is not None and c.step - c.last_eval_step >= p.steps:
            return True
        return p.seconds is not None and self.state.clock.timed - c.last_eval_timed >= p.seconds

    def budget_spent(self) -> bool:
        c, b = self.state.counters, self.budget
        return (b.max_steps is not None and c.step >= b.max_steps) or (
            b.max_seconds is not None and self.state.clock.timed >= b.max_seconds)

    def evaluate(self) -> EvalRow:
        """Evaluate (untimed; the submission's eval-parameter swap is timed, as AlgoPerf's prepare_for_eval)."""
        st, c = self.state, self.state.counters
        swap = st.updater.eval_params() if Capability.EVAL_PARAMS in self.caps else None  # type: ignore[attr-defined]
        if swap is not None:
            with st.clock.timing():
                swap.__enter__()
        try:
            with st.clock.paused():
                st.model.eval()
                with torch.no_grad():
                    metrics = dict(self.task.evaluate(st.model))
                st.model.train()
        finally:
            if swap is not None:
                with st.clock.timing():
                    swap.__exit__(None, None, None)
        if self.metric.name not in metrics:
            raise RuntimeError(f"workload {self.workload.name!r} evaluate() returned no {self.metric.name!r}")
        groups = getattr(st.updater, "param_groups", None) or [{}]
        row = EvalRow(
            step=c.step, examples=c.examples, tokens=c.tokens, timed_seconds=st.clock.timed,
            eval_seconds=st.clock.untimed, wall_seconds=time.perf_counter() - self.wall_start,
            train_loss=c.loss_sum / c.loss_count if c.loss_count else math.nan,
            metric_value=float(metrics[self.metric.name]), learning_rate=float(groups[0].get("lr", math.nan)),
            batch_size=c.last_batch_size or self.batch_size(), metrics_json=json.dumps({k: float(v) for k, v in metrics.items()}),
        )
        st.rows.append(row)
        c.last_eval_step, c.last_eval_timed, c.loss_sum, c.loss_count = c.step, st.clock.timed, 0.0, 0
        return row

    def check_divergence(self, loss: float) -> None:
        c = self.state.counters
        if not math.isfinite(loss):
            raise _Stop("diverged", f"training loss became {loss} at step {c.step}")
        ref = abs(c.initial_loss or 0.0)
        if ref > 0 and loss > self.cfg.divergence_factor * ref:
            raise _Stop("diverged", f"training loss {loss:.4g} exceeded {self.cfg.divergence_factor:g}x its first "
                                    f"value {ref:.4g} at step {c.step}")

    # ----- the loop -------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run ``warmup_steps`` steps off the clock, then restore the state exactly (only caches stay warm)."""
        if self.cfg.warmup_steps <= 0:
            return
        snap = self.state.snapshot()
        for _ in range(self.cfg.warmup_steps):
            self.step()
        self.state.load_state_dict(snap)

    def after_eval(self, row: EvalRow) -> bool:
        hit = self.metric.reached(row.metric_value, self.target)
        if self.observer:
            self.observer.evaluated(row, reached=hit)
        if self.cfg.checkpoint is not None:
            with self.state.clock.paused():
                self.state.save(self.cfg.checkpoint)
        if not hit and not math.isfinite(row.metric_value):
            raise _Stop("diverged", f"validation {self.metric.name} became {row.metric_value}")
        return hit

    def run(self) -> tuple[str, str | None]:
        """Train until the target, the budget, divergence or the timeout; return (outcome, reason)."""
        if self.observer:
            self.observer.started(max_steps=self.budget.max_steps, max_seconds=self.budget.max_seconds)
        if not self.state.rows:  # step 0: the starting point, off the clock
            if self.after_eval(self.evaluate()):
                return "reached", None
        while True:
            loss = self.step()
            if self.observer:
                self.observer.stepped(step=self.state.counters.step, loss=loss,
                                      timed_seconds=self.state.clock.timed)
            try:
                self.check_divergence(loss)
            except _Stop:
                self._final_eval_quietly()
                raise
            spent = self.budget_spent()
            if (spent or self.eval_due()) and self.after_eval(self.evaluate()):
                return "reached", None
            if spent:
                return "missed", None
            if self.cfg.timeout is not None and time.perf_counter() - self.wall_start > self.cfg.timeout:
                raise _Stop("timeout", f"wall-clock limit of {self.cfg.timeout:g} s exceeded")

    def _final_eval_quietly(self) -> None:
        """After divergence, record where the model ended if the workload can still evaluate it."""
        try:
            row = self.evaluate()
            if self.observer:
                self.observer.evaluated(row, reached=False)
        except Exception:  # a NaN model may not evaluate; the outcome is already known
            pass


def _to_target(rows: list[EvalRow], metric_goal: str, target: float) -> EvalRow | None:
    from optbench.api import reached

    return next((r for r in rows if reached(r.metric_value, target, metric_goal)), None)


def run_trial(workload: Loaded[Workload], submission: Loaded[Submission], cfg: TrialConfig, *,
              results_dir: Path, observer: Observer | None = None) -> TrialResult:
    """Run one trial and write its Parquet file; failures of the trial become its outcome.

    Args:
      workload: the loaded workload plugin.
      submission: the loaded submission plugin.
      cfg: how to run it.
      results_dir: root of the results store.
      observer: optional progress receiver.
    Returns:
      The written record, its evaluation rows and the file's path.
    Raises:
      UsageError: bad input found before training (unknown size or hyperparameter, unavailable device, missing data).
    """
    w, s = workload.obj, submission.obj
    size = resolve_size(w, cfg.size)
    hparams = merge(s.defaults, cfg.hparams, submission=submission.name)
    device = resolve_device(cfg.device)
    budget, period = _budget(size, cfg), _period(size, cfg)
    batch_size = int(cfg.batch_size or hparams.get("batch_size") or size.batch_size)
    info = TrialInfo(workload=w.name, size=size.name, step_hint=size.step_hint, max_steps=budget.max_steps,
                     batch_size=batch_size, device=str(device), seed=cfg.seed)
    outcome, reason, loop = "error", None, None
    try:
        task = w.setup(size, device=device, data_dir=cfg.data_dir)  # UsageError (missing data) propagates
        loop = TrialLoop(task=task, workload=w, submission=s, hparams=hparams, info=info, budget=budget,
                         period=period, cfg=cfg, device=device, observer=observer)
        if cfg.checkpoint is not None and cfg.checkpoint.exists():
            loop.state.load(cfg.checkpoint)
        else:
            loop.warm_up()
        outcome, reason = loop.run()
    except _Stop as stop:
        outcome, reason = stop.outcome, stop.reason
    except UsageError:
        raise
    except Exception as exc:  # plugin code failed: the trial's outcome, not the harness's crash
        outcome, reason = classify(exc), traceback.format_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rows = loop.state.rows if loop is not None else []
    record = _record(w, workload, submission, size, budget, hparams, cfg, outcome, reason, rows, loop, device)
    path = write_trial(results_dir, record, rows)
    return TrialResult(record=record, rows=rows, path=path)


def _record(w: Workload, workload: Loaded[Any], submission: Loaded[Any], size: Size, budget: Budget,
            hparams: Mapping[str, Any], cfg: TrialConfig, outcome: str, reason: str | None, rows: list[EvalRow],
            loop: TrialLoop | None, device: torch.device) -> TrialRecord:
    goal = w.metric.goal.value
    hit = _to_target(rows, goal, size.target) if outcome == "reached" else None
    finite = [r.metric_value for r in rows if math.isfinite(r.metric_value)]
    best = (min(finite) if goal == "min" else max(finite)) if finite else None
    prov = provenance.collect(str(device))
    now = datetime.now(timezone.utc)
    return TrialRecord(
        schema_version=SCHEMA_VERSION, run_id=f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        created_at=now.isoformat(timespec="seconds"), workload=w.name, size=size.name,
        workload_origin=f"{workload.origin.distribution}=={workload.origin.version}",
        submission=submission.name,
        submission_origin=f"{submission.origin.distribution}=={submission.origin.version}",
        hparams=json.dumps(dict(hparams), sort_keys=True, default=str), seed=cfg.seed,
        study=cfg.study if cfg.study is not None else f"seed{cfg.seed}", trial=cfg.trial, outcome=outcome,
        metric_name=w.metric.name, metric_goal=goal, target=size.target,
        time_to_target=hit.timed_seconds if hit else None, steps_to_target=hit.step if hit else None,
        examples_to_target=hit.examples if hit else None, tokens_to_target=hit.tokens if hit else None,
        best_metric=best, total_steps=loop.state.counters.step if loop else 0,
        total_timed_seconds=loop.state.clock.timed if loop else 0.0, max_steps=budget.max_steps,
        max_seconds=budget.max_seconds, error=reason, **prov.as_dict(), compiled=cfg.compile,
    )
