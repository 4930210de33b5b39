"""The loop of one trial: steps timed in stretches, evaluations, stopping, checkpoints; its state in one place.

One step (all timed; nothing waits for the device)::

    batch = task.next_batch(batch_size, data_gen)           # the global batch, on every rank
    for micro_batch, w in this rank's share, cut into micro-batches:   # optbench.engine.stepping
        (w * task.loss(model, micro_batch)).backward()      # w = the micro-batch's share of the batch's tokens
    all-reduce the gradients over ranks                     # only under torchrun
    updater.step(closure)        # closure only for submissions that declare Capability.CLOSURE / SAMPLED_LOSS
    updater.zero_grad()

With one process and no micro-batch size this is exactly ``task.loss(model, batch).backward()``. A submission with
``Capability.OWNS_STEP`` (an AlgoPerf file) replaces all of it by ``loss, batch = updater.train_step(batches, ...)``:
the harness runs no forward or backward of its own, so the step's timed seconds are the submission's; the clock,
the counters and the rule that nothing waits for the device stay the same. The loop ends by
raising :class:`Stop` (an outcome) or returning one; :mod:`optbench.engine.runner` turns every way it ends into a
recorded result.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Protocol

import torch

from optbench.api import Capability, Task, TrainingComplete
from optbench.engine import checkpoints
from optbench.engine.backends import CompileWatch, compile_model
from optbench.engine.clock import Clock
from optbench.engine.flops import FlopCounts, OptimizerTimer, count_trial
from optbench.engine.prepared import MAX_BATCH, PreparedTrial
from optbench.engine.state import TrialState
from optbench.engine.stepping import Stepper
from optbench.parallel import distributed
from optbench.parallel.distributed import Group
from optbench.plugins import roles
from optbench.store.records import EvalRow


class Observer(Protocol):
    """Receives progress (the CLI draws a progress bar from it). All calls are made off the clock."""

    def started(self, *, max_steps: int | None, max_seconds: float | None) -> None: ...

    def stepped(self, *, step: int, loss: float, timed_seconds: float) -> None: ...

    def evaluated(self, row: EvalRow, *, reached: bool) -> None: ...


class Stop(Exception):
    """Internal: ends the loop with an outcome."""

    def __init__(self, outcome: str, reason: str | None = None) -> None:
        super().__init__(outcome)
        self.outcome, self.reason = outcome, reason


class TrialTimeout(BaseException):
    """Raised into the trial by the wall-clock deadline. A BaseException, so that plugin code catching
    ``Exception`` cannot swallow it."""


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose ("init", "data"...) derived from the trial's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


def classify(exc: BaseException) -> str:
    """``oom`` for out-of-memory errors (CUDA or host), ``error`` for anything else."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "oom"
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return "oom"
    return "error"


class TrialLoop:
    """The loop of one trial; its mutable state lives in :attr:`state` so that it can be saved and restored.

    Steps are timed in stretches (:mod:`optbench.engine.clock`): nothing in :meth:`step` waits for the device. Every
    ``prep.sync_every`` steps, and wherever an evaluation or the step budget falls, the loop halts the clock,
    reads the stretch's training losses in one transfer (divergence, the progress bar), checks the seconds budget
    and the evaluation period, and starts the next stretch.
    """

    def __init__(self, *, prep: PreparedTrial, task: Task, observer: Observer | None, wall_start: float,
                 group: Group | None = None) -> None:
        self.prep, self.task, self.observer, self.group = prep, task, observer, group
        self.world = group.world if group is not None else distributed.World()  # as run_prepared found it
        self.wall_start = wall_start  # perf_counter() when the trial began (set-up included, as --timeout counts)
        self.metric = prep.workload.obj.metric
        self.caps = prep.submission.obj.capabilities
        device = torch.device(prep.device)
        torch.manual_seed(derive_seed(prep.seed, "torch"))
        model = task.init_model(torch.Generator().manual_seed(derive_seed(prep.seed, "init")))
        roles.attach(model, roles.task_roles(task, model))  # the workload's parameter roles, for the submission
        updater = prep.submission.obj.create(model, prep.hparams, prep.info)
        self.owns_step = Capability.OWNS_STEP in self.caps
        if self.owns_step:  # untimed set-up, as AlgoPerf's init_optimizer_state
            updater.bind(task, metric=self.metric, target=prep.target, period=prep.period,  # type: ignore[attr-defined]
                         max_seconds=prep.budget.max_seconds)
        # The submission and the checkpoints see the plain module; only forward passes go through the compiled one.
        self.forward_model = compile_model(model) if prep.compile else model
        data_device = device if device.type == "cuda" else torch.device("cpu")
        self.state = TrialState(
            model=model, updater=updater,
            data_gen=torch.Generator(device=data_device).manual_seed(derive_seed(prep.seed, "data")),
            sample_gen=torch.Generator(device=data_device).manual_seed(derive_seed(prep.seed, "sample")),
            clock=Clock(device=device, waiter=group.sync if group is not None else None), device=device,
        )
        self.began = False  # resumed from the checkpoint, or warmed up afresh: see begin()
        self.stepper = Stepper(task=task, model=self.forward_model, params_of=model, micro=prep.micro_batch_size,
                               world=self.world, group=group, sample_gen=self.state.sample_gen,
                               create_graph=Capability.CREATE_GRAPH in self.caps)
        self.pending: list[torch.Tensor] = []  # this stretch's step losses (0-d, on the device), not yet read
        self.flops: FlopCounts | None = None  # counted at trial start (begin)
        self.opt_timer = OptimizerTimer(device)  # the optimizer step's seconds (optimizer_share)
        self.timed_from = 0.0  # the clock's timed seconds when this run's steps began (a resume starts past 0)
        self.diagnostics = None
        if prep.diagnostics:
            from optbench.engine.diagnostics import Diagnostics

            self.diagnostics = Diagnostics(task, seed=derive_seed(prep.seed, "diagnostics"),
                                           batch_size=prep.hvp_batch or prep.batch_size,
                                           micro_batch_size=prep.micro_batch_size,
                                           noise_batches=prep.noise_batches, iters=prep.iters)

    # ----- one step -------------------------------------------------------------------------------------------
    def batch_size(self) -> int:
        if Capability.BATCH_SCHEDULE in self.caps:
            bs = self.state.updater.batch_size(self.state.counters.step + 1)  # type: ignore[attr-defined]
            if isinstance(bs, bool) or not isinstance(bs, int) or not 1 <= bs <= MAX_BATCH:
                raise ValueError(f"the submission's batch_size() returned {bs!r}; expected an int in 1..{MAX_BATCH}")
            return bs
        return self.prep.batch_size

    def step(self) -> None:
        """One update step, queued on the device without waiting for it; its loss joins :attr:`pending`."""
        st = self.state
        bs = self.batch_size()
        if self.owns_step:
            loss, batch = st.updater.train_step(self.batches(bs), step=st.counters.step,  # type: ignore[attr-defined]
                                                timed=st.clock.timed, rows=st.rows)
        else:
            batch = self.task.next_batch(bs, st.data_gen)
            loss = self.stepper.backward(batch)
            self.opt_timer.start()
            if Capability.CLOSURE in self.caps or Capability.SAMPLED_LOSS in self.caps:
                st.updater.step(self.stepper.closure(batch))
            else:
                st.updater.step()
            self.opt_timer.stop()
            st.updater.zero_grad(set_to_none=True)
        examples, tokens = self.task.counts(batch)
        c = st.counters
        c.step += 1
        c.examples += examples
        c.tokens += tokens
        c.last_batch_size = bs
        if loss is not None:  # an OWNS_STEP submission may not report one
            self.pending.append(loss)

    def batches(self, batch_size: int):  # noqa: ANN201  (a generator)
        """The trial's batch stream for an OWNS_STEP submission: each ``next`` draws from the data generator."""
        while True:
            yield self.task.next_batch(batch_size, self.state.data_gen)

    def read_losses(self) -> float:
        """Read the pending step losses (one transfer; summed over ranks), fold them into the counters and check
        each for divergence; returns the latest. Call with the clock halted."""
        if not self.pending:
            return math.nan
        values = torch.stack(self.pending).to(torch.float64)  # (S,) this rank's shares of the S steps' losses
        if self.group is not None:
            losses = self.group.to_host(self.group.reduce_values(values))
        else:
            losses = values.tolist()
        self.pending.clear()
        c = self.state.counters
        first_step = c.step - len(losses) + 1
        for i, value in enumerate(losses):
            c.loss_sum += value
            c.loss_count += 1
            if c.initial_loss is None:
                c.initial_loss = value
            self.check_divergence(value, step=first_step + i)
        return losses[-1]

    # ----- evaluation -----------------------------------------------------------------------------------------
    def eval_due(self) -> bool:
        c, p = self.state.counters, self.prep.period
        if p.steps is not None and c.step - c.last_eval_step >= p.steps:
            return True
        return p.seconds is not None and self.state.clock.timed - c.last_eval_timed >= p.seconds

    def budget_spent(self) -> bool:
        c, b = self.state.counters, self.prep.budget
        return (b.max_steps is not None and c.step >= b.max_steps) or (
            b.max_seconds is not None and self.state.clock.timed >= b.max_seconds)

    def sync_due(self) -> bool:
        """Whether this step ends a stretch: every ``sync_every`` steps, and where the step period or the step
        budget falls (both known without reading the device)."""
        c, p, b = self.state.counters, self.prep.period, self.prep.budget
        return (c.step % self.prep.sync_every == 0
                or (p.steps is not None and c.step - c.last_eval_step >= p.steps)
                or (b.max_steps is not None and c.step >= b.max_steps))

    def measure(self) -> dict[str, float]:
        """The workload's validation metrics; with several ranks, rank 0's values, so every rank decides alike."""
        st = self.state
        st.model.eval()
        with torch.no_grad():
            metrics = {str(k): float(v) for k, v in dict(self.task.evaluate(st.model)).items()}
        st.model.train()
        if self.group is not None:
            keys = sorted(metrics)
            values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.group.comm_device)
            metrics = dict(zip(keys, self.group.to_host(self.group.broadcast(values, src=0))))
        return metrics

    def evaluate(self) -> EvalRow:
        """Evaluate (untimed; the submission's eval-parameter swap is timed, as AlgoPerf's prepare_for_eval)."""
        st, c = self.state, self.state.counters
        lr = float((getattr(st.updater, "param_groups", None) or [{}])[0].get("lr", math.nan))
        diag: dict[str, float] = {}
        if self.diagnostics is not None:  # at the training weights, before any evaluation swap; untimed
            with st.clock.paused():
                diag = self.diagnostics.measure(st.model, lr=lr if math.isfinite(lr) else None, updater=st.updater)
        swap = st.updater.eval_params() if Capability.EVAL_PARAMS in self.caps else None  # type: ignore[attr-defined]
        if swap is not None:
            with st.clock.timing():
                swap.__enter__()
        try:
            with st.clock.paused():
                metrics = self.measure()
        finally:
            if swap is not None:
                with st.clock.timing():
                    swap.__exit__(None, None, None)
        if self.metric.name not in metrics:
            raise RuntimeError(f"workload {self.prep.workload.name!r} evaluate() returned no {self.metric.name!r}")
        metrics.update(diag)
        if self.owns_step:  # what the submission's adapter notes on the record (AlgoPerf: the batch size's source)
            metrics.update(getattr(st.updater, "eval_notes", {}))
        row = EvalRow(
            step=c.step, examples=c.examples, tokens=c.tokens, timed_seconds=st.clock.timed,
            eval_seconds=st.clock.untimed, wall_seconds=time.perf_counter() - self.wall_start,
            train_loss=c.loss_sum / c.loss_count if c.loss_count else math.nan,
            metric_value=float(metrics[self.metric.name]), learning_rate=lr,
            batch_size=c.last_batch_size or self.batch_size(), metrics_json=json.dumps(metrics),
        )
        st.rows.append(row)
        c.last_eval_step, c.last_eval_timed, c.loss_sum, c.loss_count = c.step, st.clock.timed, 0.0, 0
        return row

    def check_divergence(self, loss: float, *, step: int) -> None:
        c = self.state.counters
        if not math.isfinite(loss):
            raise Stop("diverged", f"training loss became {loss} at step {step}")
        ref = abs(c.initial_loss or 0.0)
        if ref > 0 and loss > self.prep.divergence_factor * ref:
            raise Stop("diverged", f"training loss {loss:.4g} exceeded {self.prep.divergence_factor:g}x its first "
                                    f"value {ref:.4g} at step {step}")

    # ----- the loop -------------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Resume from the trial's checkpoint when there is one, else run the warm-up steps.

        Raises:
          checkpoints.UnusableCheckpoint: the checkpoint cannot be resumed here (it is left as it was).
        """
        prep = self.prep
        self.count_flops()
        if self.owns_step and prep.checkpoint is not None:
            self.state.updater.state_dict()  # a state no checkpoint can hold: a usage error now, not mid-trial
        if prep.checkpoint is not None and prep.resume and prep.checkpoint.exists():
            checkpoints.load(self.state, prep.checkpoint, prep.checkpoint_key())
        else:
            self.warm_up()
        self.opt_timer.reset()
        self.timed_from = self.state.clock.timed
        self.began = True

    def count_flops(self) -> None:
        """Count the model's FLOPs per example and the optimizer's per step, untimed, on copies
        (:mod:`optbench.engine.flops`): the trial's state and random streams are untouched."""
        if self.owns_step:  # the submission's step is not an optimizer step alone: model FLOPs only
            with self.state.clock.paused():
                self.flops = count_trial(self.task, self.state.model, None, hparams={}, device=self.state.device,
                                         deadline_passed=self.past_deadline, optimizer=False)
            return
        closure = None
        if Capability.CLOSURE in self.caps or Capability.SAMPLED_LOSS in self.caps:
            closure = self._counting_closure

        def with_graph(model: torch.nn.Module) -> None:  # gradients that carry their graph, as the closure makes them
            self._counting_closure(model)()

        graph_grads = with_graph if Capability.CREATE_GRAPH in self.caps else None
        with self.state.clock.paused():
            self.flops = count_trial(self.task, self.state.model, self.state.updater, hparams=self.prep.hparams,
                                     device=self.state.device, closure=closure, graph_grads=graph_grads,
                                     deadline_passed=self.past_deadline)

    def past_deadline(self) -> bool:
        """Whether the trial's wall-clock limit (``--timeout``) has passed."""
        return self.prep.timeout is not None and time.perf_counter() - self.wall_start >= self.prep.timeout

    def _counting_closure(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        """A ``step(closure)`` argument over ``model`` (a copy) on a batch of the count's own generator; its backward
        keeps the graph for a submission that differentiates its gradient (Capability.CREATE_GRAPH), as the
        trial's own steps do."""
        from optbench.engine.flops import COUNT_BATCH, _generator

        gen = _generator(self.state.device)
        batch = self.task.next_batch(COUNT_BATCH, gen)
        graph = Capability.CREATE_GRAPH in self.caps

        def closure(sampled: bool = False) -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = self.task.sampled_loss(model, batch, gen) if sampled else self.task.loss(model, batch)
                loss.backward(create_graph=graph)
            return loss.detach()

        return closure

    def optimizer_share(self) -> float | None:
        """The optimizer step's share of this run's timed seconds (read at a stretch's end or after the loop)."""
        self.opt_timer.collect()
        return self.opt_timer.share(self.state.clock.timed - self.timed_from)

    def watch_compiles(self) -> CompileWatch:
        """A context counting what ``--compile`` compiles while it is open into the trial's counters."""
        return CompileWatch(lambda: self.state.counters)

    def warm_up(self) -> None:
        """Run ``warmup_steps`` steps off the clock, then restore the state exactly (only caches stay warm, and the
        counts of what they compiled)."""
        if self.prep.warmup_steps <= 0:
            return
        snap = self.state.snapshot()
        for _ in range(self.prep.warmup_steps):
            self.step()
        self.state.clock.sync()
        self.pending.clear()
        warmed = self.state.counters
        self.state.load_state_dict(snap)
        self.state.counters.keep_compiles(warmed)

    def after_eval(self, row: EvalRow) -> bool:
        hit = self.metric.reached(row.metric_value, self.prep.target)
        if self.observer:
            self.observer.evaluated(row, reached=hit)
        legacy = self.prep.checkpoint_every is None and not self.prep.owns_checkpoint  # an explicit file, saved here
        if self.prep.checkpoint is not None and legacy and self.world.is_main:
            self.save_checkpoint()
        if not hit and not math.isfinite(row.metric_value):
            raise Stop("diverged", f"validation {self.metric.name} became {row.metric_value}")
        return hit and not self.prep.full_budget  # a full-budget trial goes on past the target

    def spent_outcome(self) -> str:
        """The outcome of a trial whose budget is spent: ``reached`` when a full-budget trial met the target on the
        way (derived from its rows, so a resumed trial says the same), else ``missed``."""
        if self.prep.full_budget and any(self.metric.reached(r.metric_value, self.prep.target)
                                         for r in self.state.rows):
            return "reached"
        return "missed"

    def run(self) -> tuple[str, str | None]:
        """Train until the target, the budget, divergence or the timeout; return (outcome, reason)."""
        if self.observer:
            self.observer.started(max_steps=self.prep.budget.max_steps, max_seconds=self.prep.budget.max_seconds)
        if not self.state.rows:  # step 0: the starting point, off the clock
            if self.after_eval(self.evaluate()):
                return "reached", None
        clock = self.state.clock
        clock.run()
        while True:
            try:
                self.step()
            except TrainingComplete as done:
                return self.complete(str(done))
            if self.sync_due():
                outcome = self.checkpoint_stretch()
                if outcome is not None:
                    return outcome, None
                clock.run()
            if self.prep.timeout is not None and time.perf_counter() - self.wall_start > self.prep.timeout:
                raise TrialTimeout()  # where the deadline's signal cannot reach (not the main thread)

    def complete(self, reason: str) -> tuple[str, str]:
        """The submission ended training (AlgoPerf's TrainingCompleteError): one more evaluation, then ``reached``
        if it meets the target, else ``missed``; the reason is recorded either way."""
        self.state.clock.halt()
        self.read_losses()
        row = self.evaluate()
        hit = self.metric.reached(row.metric_value, self.prep.target)
        if self.observer:
            self.observer.evaluated(row, reached=hit)
        return ("reached" if hit else self.spent_outcome()), reason

    def checkpoint_stretch(self) -> str | None:
        """End of a stretch: halt the clock, read the losses, agree on the clock across ranks, evaluate if due.
        Returns ``reached`` or ``missed`` when the trial ends here, else None."""
        clock = self.state.clock
        clock.halt()
        self.opt_timer.collect()  # the halt synchronised: every event of the stretch has completed
        try:
            loss = self.read_losses()
        except Stop:
            self._final_eval_quietly()
            raise
        if self.group is not None:
            clock.timed = self.group.agree_max(clock.timed)
        if self.observer:
            self.observer.stepped(step=self.state.counters.step, loss=loss, timed_seconds=clock.timed)
        spent = self.budget_spent()
        if (spent or self.eval_due()) and self.after_eval(self.evaluate()):
            return "reached"
        if spent:
            return self.spent_outcome()
        self.maybe_checkpoint()  # only where the loop goes on: a resumed trial starts with its next step
        return None

    def save_checkpoint(self) -> None:
        """Save the whole state (untimed; rank 0 only: every rank holds the same state)."""
        with self.state.clock.paused():
            checkpoints.save(self.state, self.prep.checkpoint, self.prep.checkpoint_key())

    def maybe_checkpoint(self) -> None:
        """At the end of a stretch: a checkpoint when ``checkpoint_every`` timed seconds have passed since the last,
        else a note of the timed seconds reached (what a kill now would lose)."""
        prep, st = self.prep, self.state
        if prep.checkpoint is None or prep.checkpoint_every is None or not self.world.is_main:
            return
        if st.clock.timed - st.counters.last_checkpoint_timed >= prep.checkpoint_every:
            self.save_checkpoint()
        else:
            checkpoints.note_progress(prep.checkpoint, st.clock.timed)

    def _final_eval_quietly(self) -> None:
        """After divergence, record where the model ended if the workload can still evaluate it."""
        try:
            row = self.evaluate()
            if self.observer:
                self.observer.evaluated(row, reached=False)
        except Exception:  # a NaN model may not evaluate; the outcome is already known
            pass


