"""An AlgoPerf PyTorch submission file as an optbench :class:`~optbench.api.Submission` that owns its steps.

The updater drives the file's functions exactly as AlgoPerf's runner does, one call per optbench step:

* ``bind`` (untimed, once): the :class:`~optbench.plugins.algoperf.view.WorkloadView`, ``get_batch_size`` by the
  workload's AlgoPerf name (falling back to the workload's batch, noted on every evaluation row), then
  ``init_optimizer_state(workload, model, model_state, hyperparameters, rng)``;
* ``train_step`` (timed): ``data_selection`` over the trial's batch stream (``next(queue)`` when the file has none),
  then ``update_params(...)`` with the step's ``eval_results``, ``global_step``, its own ``rng`` and ``train_state``
  (the accumulated submission time included). ``TrainingCompleteError`` becomes
  :class:`optbench.api.TrainingComplete`, which ends the trial after one more evaluation;
* ``eval_params`` (timed, before each evaluation): ``prepare_for_eval`` when the file defines it.

Hyperparameters are a namedtuple (``None`` with no search space and no values: the self-tuning ruleset). The random
keys are NumPy uint32 pairs derived from the trial's seed and the step (:func:`step_key`): nothing to save, the
same on resume. The optimizer state is checkpointed through ``state_dict`` of what it holds (torch optimizers and
schedulers); a state holding anything else cannot be, and ``state_dict`` says so in one line (a usage error before
training, when checkpoints are asked for).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import json
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from optbench.api import EvalPeriod, Metric, Task, TrainingComplete, TrialInfo
from optbench.errors import UsageError
from optbench.plugins.algoperf.view import WorkloadView, as_batch, task_batch
from optbench.plugins.hparams import HARNESS_HPARAMS

ALGOPERF_NAMES = {"cifar10": "cifar"}  # optbench workloads that are AlgoPerf's under another name
PLAIN = (bool, int, float, str, type(None))


MASK64 = (1 << 64) - 1


def base_key(seed: int, purpose: str) -> int:
    """A 64-bit stream id for one purpose of one trial (hashed once per trial)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:algoperf:{purpose}".encode()).digest()[:8], "little")


def step_key(base: int, step: int) -> np.ndarray:
    """AlgoPerf's PyTorch random key for ``step`` of stream ``base``: a NumPy uint32 pair, SplitMix64's output for
    base + step (a bijective mix: distinct steps give distinct keys). No state to save: the same on resume."""
    z = (base + 0x9E3779B97F4A7C15 * (step + 1)) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return np.array((z & 0xFFFFFFFF, z >> 32), dtype=np.uint32)


def hyperparameters(hparams: Mapping[str, Any]) -> Any:
    """The namedtuple an AlgoPerf submission reads (``hyperparameters.learning_rate``), None when empty."""
    values = {k: v for k, v in hparams.items() if k not in HARNESS_HPARAMS}
    if not values:
        return None
    return collections.namedtuple("Hyperparameters", sorted(values))(**values)


class AlgoPerfUpdater:
    """The runtime side of one AlgoPerf submission in one trial (see the module docstring)."""

    def __init__(self, module: ModuleType, model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo,
                 *, label: str) -> None:
        self.module, self.model, self.info, self.label = module, model, info, label
        self.hyperparameters = hyperparameters(hparams)
        self.optimizer_state: Any = None
        self.model_state: Any = None
        self.view: WorkloadView | None = None
        self.batch = info.batch_size
        self.eval_notes: dict[str, str] = {}
        self.takes_train_state = "train_state" in inspect.signature(module.update_params).parameters
        self._evals: list[tuple[int, dict[str, float]]] = []
        self._reached_at = (0, False)  # (evaluations seen, whether any met the target): AlgoPerf's sticky flag
        self._keys = {p: base_key(info.seed, p) for p in ("step", "eval")}

    # ----- the OWNS_STEP protocol -----------------------------------------------------------------------------
    def bind(self, task: Task, *, metric: Metric, target: float, period: EvalPeriod,
             max_seconds: float | None) -> None:
        from optbench.plugins.algoperf.imports import ensure

        ensure("algoperf")
        from algoperf import spec  # type: ignore[import-not-found]

        from optbench.plugins.algoperf.imports import training_complete_types

        self.complete = training_complete_types()
        self.view = WorkloadView(task=task, model=self.model, info=self.info, metric=metric, target=target,
                                 period=period, max_seconds=max_seconds, spec=spec)
        self.batch, self.eval_notes["algoperf_batch_size"] = self._batch_size()
        self.optimizer_state = self.module.init_optimizer_state(
            self.view, self.model, self.model_state, self.hyperparameters,
            step_key(base_key(self.info.seed, "init"), 0))

    def _batch_size(self) -> tuple[int, str]:
        """``get_batch_size`` of the workload's AlgoPerf name, or the workload's batch with the reason."""
        name = ALGOPERF_NAMES.get(self.info.workload, self.info.workload)
        try:
            size = self.module.get_batch_size(name)
        except Exception as exc:  # the baselines raise ValueError for a workload they do not know
            return self.info.batch_size, f"workload's {self.info.batch_size} (get_batch_size({name!r}) raised " \
                                         f"{type(exc).__name__})"
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UsageError(f"{self.label}: get_batch_size({name!r}) returned {size!r}; expected a positive int")
        return size, f"get_batch_size({name!r})"

    def batch_size(self, step: int) -> int:
        return self.batch

    def train_step(self, batches: Iterator[Any], *, step: int, timed: float,
                   rows: list[Any]) -> tuple[torch.Tensor | None, Any]:
        """One AlgoPerf step: data_selection, then update_params (see the module docstring)."""
        view = self.view
        rng = step_key(self._keys["step"], step)
        queue = map(as_batch, batches)  # an iterator, as AlgoPerf's input queue
        select = getattr(self.module, "data_selection", None)
        batch = next(queue) if select is None else select(
            view, queue, self.optimizer_state, self.model, self.model_state, self.hyperparameters, step, rng)
        view.step_loss = None
        evals = self.eval_results(rows)
        extra = {"train_state": self._train_state(timed, evals)} if self.takes_train_state else {}
        try:
            out = self.module.update_params(
                view, self.model, view.model_params_types, self.model_state, self.hyperparameters, batch,
                view.loss_type, self.optimizer_state, evals, step, rng, **extra)
        except self.complete as done:
            raise TrainingComplete(f"the submission ended training (TrainingCompleteError) at step {step + 1}: "
                                   f"{done}") from None
        self.optimizer_state, params, self.model_state = out
        self._step, self._rows = step + 1, rows
        if params is not self.model:
            raise RuntimeError("update_params returned another parameter container than the model it was given; "
                               "PyTorch submissions update the model in place and return it")
        return view.step_loss, task_batch(batch)

    def eval_results(self, rows: list[Any]) -> list[tuple[int, dict[str, float]]]:
        """AlgoPerf's ``eval_results``: (global_step, metrics) per evaluation, validation metrics prefixed."""
        if len(rows) == len(self._evals):  # the common case: no evaluation since the last step
            return self._evals
        for row in rows[len(self._evals):]:
            metrics = {f"validation/{k}": v for k, v in json.loads(row.metrics_json).items()
                       if isinstance(v, (int, float))}
            metrics["score"] = row.timed_seconds  # AlgoPerf's accumulated submission time at the evaluation
            self._evals.append((row.step, metrics))
        del self._evals[len(rows):]  # a resumed trial's rows replace what was cached
        return self._evals

    def _train_state(self, timed: float, evals: list[tuple[int, dict[str, float]]]) -> dict[str, Any]:
        view = self.view
        if len(evals) != self._reached_at[0]:  # recomputed only when an evaluation was added (or a resume)
            self._reached_at = (len(evals), any(view.has_reached_validation_target(m) for _, m in evals))
        reached = self._reached_at[1]
        budget = view.max_allowed_runtime_sec
        return {"accumulated_submission_time": timed, "accumulated_eval_time": None,
                "accumulated_logging_time": None, "last_eval_time": evals[-1][1]["score"] if evals else 0.0,
                "validation_goal_reached": reached, "test_goal_reached": False, "training_complete": False,
                "is_time_remaining": budget is None or timed < budget}

    @contextlib.contextmanager
    def eval_params(self) -> Iterator[None]:
        """``prepare_for_eval`` on entry (timed by the harness); the submission swaps back in its next step."""
        prepare = getattr(self.module, "prepare_for_eval", None)
        if prepare is not None:
            out = prepare(self.view, self.model, self.view.model_params_types, self.model_state,
                          self.hyperparameters, self.view.loss_type, self.optimizer_state,
                          self.eval_results(self._rows), self._step, step_key(self._keys["eval"], self._step))
            self.optimizer_state, _, self.model_state = out
        yield

    # ----- the torch.optim.Optimizer interface the harness still reads ------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The first torch optimizer's groups in the optimizer state (the harness records its learning rate)."""
        for value in _values(self.optimizer_state):
            if isinstance(value, torch.optim.Optimizer):
                return value.param_groups
        return []

    def step(self, closure: Any = None) -> Any:
        raise RuntimeError("an AlgoPerf submission runs its own steps (train_step); step() is never called")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The submission zeroes its gradients in update_params."""

    def state_dict(self) -> dict[str, Any]:
        """The optimizer and model states as tensors and plain values; a usage error naming what cannot be saved."""
        return {"optimizer_state": self._encode(self.optimizer_state, "optimizer_state"),
                "model_state": self._encode(self.model_state, "model_state")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer_state = _decode(self.optimizer_state, state_dict["optimizer_state"])
        self.model_state = _decode(self.model_state, state_dict["model_state"])

    def _encode(self, value: Any, where: str) -> Any:
        if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
            return self._checked(value.state_dict(), where)
        if isinstance(value, Mapping):
            return {str(k): self._encode(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return self._checked(value, where)

    def _checked(self, value: Any, where: str) -> Any:
        """``value`` if checkpoints can hold it (tensors, plain values, containers of them), else a usage error."""
        if isinstance(value, (torch.Tensor, *PLAIN)):
            return value
        if isinstance(value, Mapping):
            return {k: self._checked(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._checked(v, f"{where}[{i}]") for i, v in enumerate(value))
        raise UsageError(f"{self.label}: {where} holds a {type(value).__name__}, which a checkpoint cannot store; "
                         "run this submission without --resume, --checkpoint and --checkpoint-every")

    # the step and rows the last train_step saw, for prepare_for_eval (set by the loop through train_step)
    _step = 0
    _rows: list[Any] = []


def _values(state: Any) -> Iterator[Any]:
    if isinstance(state, Mapping):
        yield from state.values()
    elif isinstance(state, (list, tuple)):
        yield from state
    elif state is not None:
        yield state


def _decode(current: Any, saved: Any) -> Any:
    """``current`` with ``saved`` loaded into it: objects through load_state_dict, containers key by key."""
    if hasattr(current, "load_state_dict") and hasattr(current, "state_dict"):
        current.load_state_dict(saved)
        return current
    if isinstance(current, Mapping):
        return {k: _decode(current.get(k), saved[str(k)]) if str(k) in saved else v for k, v in current.items()}
    if isinstance(current, (list, tuple)):
        return type(current)(_decode(c, s) for c, s in zip(current, saved))
    return saved
