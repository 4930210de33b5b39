"""The plugin API: what a workload and a submission must provide, as Protocols and frozen dataclasses.

Division of labour (AlgoPerf's, made explicit):

* A **workload** owns data, model, loss, the evaluation metric and its direction, the validation target, budgets and
  size presets. It is split in two: the :class:`Workload` describes (cheap: names, sizes, targets), and
  ``Workload.setup`` returns a :class:`Task`, the workload bound to one size and one device, which holds the data.
* A **submission** owns parameter grouping, the update rule and its schedule. ``Submission.create`` returns an
  :class:`Updater`: anything with ``torch.optim.Optimizer``'s interface (``step``, ``zero_grad``, ``state_dict``,
  ``load_state_dict``, ``param_groups``). A plain ``torch.optim.Optimizer`` subclass is accepted by the registry as
  a submission with no wrapper (see :func:`optbench.plugins.registry.optimizer_submission`).
* The **harness** (``optbench.engine.runner``) owns the clock, forward/backward, evaluation, stopping and checkpoints.

Nothing here imports torch at run time, so describing plugins stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


class Goal(str, Enum):
    """Direction of a metric, declared by the workload and stored on every result (never guessed from a name)."""

    MIN = "min"
    MAX = "max"


@dataclass(frozen=True, kw_only=True)
class Metric:
    """The validation metric a workload is scored on.

    Attributes:
      name: column name in results, e.g. ``"val_loss"`` or ``"val_accuracy"``.
      goal: whether smaller (``MIN``) or larger (``MAX``) is better.
    """

    name: str
    goal: Goal

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` meets ``target`` in this metric's direction; NaN never does."""
        return reached(value, target, self.goal)


def reached(value: float, target: float, goal: Goal | str) -> bool:
    """Whether ``value`` meets ``target`` for a metric with direction ``goal``; NaN and None never do.

    Args:
      value: the measured metric.
      target: the validation target.
      goal: ``"min"`` or ``"max"``.
    Returns:
      True when the target is met (``<=`` for min, ``>=`` for max).
    """
    if value is None or target is None or math.isnan(value):
        return False
    return value <= target if Goal(goal) is Goal.MIN else value >= target


@dataclass(frozen=True, kw_only=True)
class Budget:
    """When a trial gives up: after ``max_steps`` update steps or ``max_seconds`` of timed work, whichever first."""

    max_steps: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_seconds is None:
            raise ValueError("a Budget needs max_steps, max_seconds or both")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError("max_seconds must be > 0")


@dataclass(frozen=True, kw_only=True)
class EvalPeriod:
    """Evaluate every ``steps`` update steps and/or every ``seconds`` of timed work (whichever comes first)."""

    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise ValueError("an EvalPeriod needs steps, seconds or both")


@dataclass(frozen=True, kw_only=True)
class Size:
    """One size preset of a workload: from a CPU-seconds smoke test up to the papers' scale.

    Attributes:
      name: ``"tiny"``, ``"small"``, ``"paper"``...
      target: validation target of the workload's metric at this size.
      budget: when a trial at this size gives up.
      eval_every: evaluation period.
      batch_size: default batch size (a submission or ``--batch-size`` may change it).
      step_hint: steps the tuned baseline needs in the budget; schedules may use it (AlgoPerf's step_hint).
      options: workload-specific settings (model width, data subset...), read-only.
      dataset: name of the prepared dataset this size needs (``optbench data prepare NAME``), or None.
      note: how the target was chosen, shown by ``optbench list``.
      micro_batch_size: examples per forward/backward pass on one device, sized for the tier's GPU memory; a
        larger batch is accumulated over several passes (``--micro-batch-size`` overrides it). None: one pass.
    """

    name: str
    target: float
    budget: Budget
    eval_every: EvalPeriod
    batch_size: int
    step_hint: int
    options: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    note: str = ""
    micro_batch_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@runtime_checkable
class Task(Protocol):
    """A workload bound to one size and one device. It holds the data (on the device where it fits).

    The harness passes every random draw through the ``torch.Generator`` it owns, so the data position is part of
    the trial's saved state and a resumed trial sees the same batches.
    """

    def init_model(self, generator: torch.Generator) -> nn.Module:
        """A freshly initialised model on the task's device, drawn from ``generator`` (a CPU generator)."""
        ...

    def next_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """The next training batch of ``batch_size`` examples, drawn with ``generator`` (on the task's device)."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Mean training loss of ``model`` on ``batch`` (a scalar with its graph)."""
        ...

    def sampled_loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """Loss on labels sampled from the model's own predictive distribution (Sophia's Gauss-Newton-Bartlett
        estimator). Tasks that cannot do this raise ``NotImplementedError``."""
        ...

    def evaluate(self, model: nn.Module) -> Mapping[str, float]:
        """Validation metrics; must contain the workload's ``metric.name``. Untimed; model is in eval mode."""
        ...

    def counts(self, batch: Any) -> tuple[int, int]:
        """(examples, tokens) in ``batch``; tokens equals examples for non-sequence workloads. Computed from
        shapes: the harness calls it every step and it must not wait for the device."""
        ...

    # Optional: ``slice_batch(batch, start, stop)`` returns examples [start, stop) of a batch, for batches the
    # harness cannot cut itself (see optbench.engine.batches). ``loss`` must be a mean over the batch's tokens: the harness
    # weights the micro-batches of an accumulated step (and the ranks' shares) by their token counts.
    #
    # Optional: ``flops_per_example() -> float`` returns the model's forward+backward FLOPs per training example
    # (analytic: the LMs use PaLM's formula, linreg its exact count). Without it the harness counts them once at
    # trial start with ``torch.utils.flop_counter.FlopCounterMode`` on one batch through a copy of the model
    # (optbench.engine.flops); either way they go on the record (model_flops_per_example, flops_to_target, mfu).
    #
    # Optional: ``param_roles(model) -> Mapping[str, Role]`` names the :class:`Role` of every parameter of a model
    # that ``init_model`` made, keyed by the names :func:`named_params` yields (a tied weight once, under its first
    # name). Every such name gets exactly one role. Without it the harness classifies by module type
    # (optbench.plugins.roles.default_roles). Submissions read the roles with optbench.plugins.roles.roles_of(model),
    # and plain optimizer classes are handed groups by role (``-o roles=hidden -o rest=torch.optim:AdamW``).


class Role(str, Enum):
    """What a parameter is to the model, for submissions that treat parts differently (Muon, Adalayer, and plain
    classes given groups by role). One role per parameter tensor; a tied embedding/head is an ``EMBEDDING``."""

    HIDDEN = "hidden"  # 2-D+ weights inside the body: Linear and conv weights that are neither input nor output
    EMBEDDING = "embedding"  # tables looked up or added by index: token and position embeddings (a tied head too)
    HEAD = "head"  # the output layer's weight and bias (an untied head)
    NORM_BIAS = "norm_bias"  # scalars and vectors: norm gains and shifts, biases of hidden layers


@runtime_checkable
class Workload(Protocol):
    """A workload plugin. Describing it must be cheap: data is touched only by ``setup``."""

    name: str
    metric: Metric
    sizes: Mapping[str, Size]
    default_size: str
    description: str

    def setup(self, size: Size, *, device: torch.device, data_dir: Path | None) -> Task:
        """Load data (raising :class:`optbench.errors.DataMissingError` if not prepared) and return the Task."""
        ...

    # Optional: ``flops_per_example(size) -> float | None``, the same count as ``Task.flops_per_example`` without
    # loading data, for ``optbench list NAME`` (None or absent: "counted", by FlopCounterMode at trial start).


class Capability(str, Enum):
    """What a submission asks of the harness beyond ``loss.backward(); updater.step()``."""

    CLOSURE = "closure"  # step(closure): closure(sampled=False) re-runs forward+backward on the same batch
    SAMPLED_LOSS = "sampled_loss"  # closure(sampled=True): labels sampled from the model (Sophia); implies closure
    EVAL_PARAMS = "eval_params"  # updater.eval_params(): context manager, timed enter/exit (Schedule-Free, EMA)
    BATCH_SCHEDULE = "batch_schedule"  # updater.batch_size(step) -> int (Seesaw-style batch-size ramps)
    CREATE_GRAPH = "create_graph"  # backward(create_graph=True): the step differentiates the gradient (Adahessian)
    OWNS_STEP = "owns_step"  # the updater runs the whole step itself (AlgoPerf submissions): see :class:`OwnsStep`


@dataclass(frozen=True, kw_only=True)
class TrialInfo:
    """What the harness tells a submission about the trial when it creates its updater."""

    workload: str
    size: str
    step_hint: int
    max_steps: int | None
    batch_size: int
    device: str
    seed: int


@runtime_checkable
class Updater(Protocol):
    """The runtime object of a submission: ``torch.optim.Optimizer``'s interface."""

    param_groups: list[dict[str, Any]]

    def step(self, closure: Callable[..., Any] | None = None) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class EvalParams(Protocol):
    """Optional, with :attr:`Capability.EVAL_PARAMS`: swap in the parameters to evaluate and back."""

    def eval_params(self) -> AbstractContextManager[None]: ...


class TrainingComplete(Exception):
    """Raised by an :class:`OwnsStep` updater's ``train_step`` to end training early (AlgoPerf's
    ``TrainingCompleteError``): the harness evaluates once more, untimed, and the trial ends ``reached`` or
    ``missed`` with this exception's message as its reason."""


class OwnsStep(Protocol):
    """With :attr:`Capability.OWNS_STEP`: the updater owns the whole step. The harness never runs a forward or
    backward pass of its own for it, so every timed second of a step is the submission's.

    ``bind(task, metric=..., target=..., period=..., max_seconds=...)`` is called once, untimed, after
    ``Submission.create`` and before any step or checkpoint load. ``train_step(batches, step=..., timed=..., rows=...)``
    is one timed step: ``batches`` yields the trial's training batches (drawn from the trial's data generator, so
    its position is saved), ``step`` counts the steps done, ``timed`` the timed seconds so far (as of the latest
    stretch's end), ``rows`` the evaluation rows so far. It returns ``(loss, batch)``: the step's training loss as a
    0-d tensor left on the device (None: not known, nothing checked), and the batch it trained on (counted).
    ``step``, ``zero_grad`` and ``param_groups`` stay (the harness reads the learning rate from the first group).
    """

    def bind(self, task: Task, *, metric: Metric, target: float, period: EvalPeriod,
             max_seconds: float | None) -> None: ...

    def train_step(self, batches: Iterator[Any], *, step: int, timed: float,
                   rows: list[Any]) -> tuple[torch.Tensor | None, Any]: ...


@runtime_checkable
class Submission(Protocol):
    """A submission plugin: a factory of updaters plus what is needed to tune it."""

    name: str
    defaults: Mapping[str, Any]
    capabilities: frozenset[Capability]

    def create(self, model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo) -> Updater:
        """An updater over ``model``'s parameters with hyperparameters ``hparams`` (defaults already merged)."""
        ...

    def search_space(self) -> Mapping[str, Any] | None:
        """The tuning search space in AlgoPerf's JSON format, or None."""
        ...


@dataclass(frozen=True, kw_only=True)
class SubmissionSpec:
    """The ready-made :class:`Submission`: most built-ins are one of these.

    Attributes:
      name: short lowercase name, as on the command line.
      factory: ``factory(model, hparams, info) -> Updater``.
      defaults: default hyperparameters; the keys are the hyperparameters the submission accepts.
      capabilities: what it needs from the harness.
      search_space_file: path to its AlgoPerf-format search-space JSON.
      paper: reference of the method.
    """

    name: str
    factory: Callable[[nn.Module, Mapping[str, Any], TrialInfo], Updater]
    defaults: Mapping[str, Any]
    capabilities: frozenset[Capability] = frozenset()
    search_space_file: Path | None = None
    paper: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "capabilities", frozenset(Capability(c) for c in self.capabilities))

    def create(self, model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo) -> Updater:
        return self.factory(model, hparams, info)

    def search_space(self) -> Mapping[str, Any] | None:
        if self.search_space_file is None:
            return None
        import json

        return json.loads(Path(self.search_space_file).read_text())


def named_params(model: nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters of ``model`` with their names, each once (shared/tied weights are not repeated)."""
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            yield name, p
