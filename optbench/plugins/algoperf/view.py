"""AlgoPerf's view of an optbench workload: what ``workload.*`` means inside a submission's functions.

An optbench :class:`~optbench.api.Task` computes its mean loss from (model, batch) in one call; AlgoPerf splits that
into ``model_fn`` (forward, returning "logits") and ``loss_fn`` (logits and labels -> summed loss and count). The
view keeps the split without knowing any workload's internals: ``model_fn`` runs the task's loss forward and returns
an :class:`Outputs` holding it, and ``loss_fn`` turns that into ``{"summed", "n_valid_examples", "per_example"}``
with ``summed / n_valid_examples`` equal to the task's mean loss (``n_valid_examples`` is the batch's token count:
the task's loss is a mean over tokens). So ``loss = d["summed"] / d["n_valid_examples"]; loss.backward()`` computes
exactly the gradient the harness would. Batches are ``{"inputs": b, "targets": b}`` over the task's own batch ``b``
(``batch.get("weights")`` is None). What differs from AlgoPerf is in docs/ALGOPERF.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from optbench.api import EvalPeriod, Metric, Task, TrialInfo, named_params

# Loss types of the built-in workloads (AlgoPerf's enum names); others: softmax cross-entropy.
LOSS_TYPES = {"linreg": "MEAN_SQUARED_ERROR", "teacher": "MEAN_SQUARED_ERROR"}


class Outputs:
    """What ``model_fn`` returns in place of logits: the task's mean loss over ``tokens`` tokens (with its graph).
    A slotted class, not a frozen dataclass: one is made every step, and a frozen ``__init__`` costs several times
    more."""

    __slots__ = ("loss", "tokens")

    def __init__(self, loss: torch.Tensor, tokens: int) -> None:
        self.loss, self.tokens = loss, tokens


def as_batch(task_batch: Any) -> dict[str, Any]:
    """The AlgoPerf batch dict over one of the task's batches."""
    return {"inputs": task_batch, "targets": task_batch}


def task_batch(batch: Any) -> Any:
    """The task's batch inside an AlgoPerf batch dict (a submission's data_selection may build its own dict)."""
    if type(batch) is dict or isinstance(batch, Mapping):  # the exact type first: an ABC check costs a microsecond
        return batch["inputs"]
    return batch


def parameter_type(name: str, module: nn.Module, param: torch.Tensor, spec: Any) -> Any:
    """AlgoPerf's ``ParameterType`` of one parameter, from its module's type and its shape."""
    kind = spec.ParameterType
    norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) or "norm" in name.lower()
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return kind.BATCH_NORM_SCALE if name.endswith("weight") else kind.BATCH_NORM_BIAS
    if norm:
        return kind.LAYER_NORM_SCALE if name.endswith(("weight", "scale", "gain")) else kind.LAYER_NORM_BIAS
    if isinstance(module, nn.Embedding):
        return kind.EMBEDDING
    if name.endswith("bias"):
        return kind.BIAS
    if isinstance(module, nn.modules.conv._ConvNd):
        return kind.CONV_WEIGHT
    return kind.WEIGHT


class WorkloadView:
    """One optbench trial's workload as an AlgoPerf ``Workload`` (the attributes and methods submissions use)."""

    def __init__(self, *, task: Task, model: nn.Module, info: TrialInfo, metric: Metric, target: float,
                 period: EvalPeriod, max_seconds: float | None, spec: Any) -> None:
        self.task, self.info, self.metric, self.spec = task, info, metric, spec
        self.workload_name = info.workload
        self.target_metric_name = metric.name
        self.validation_target_value = target
        self.target_goal = metric.goal.value  # "min" or "max": optbench declares the direction
        self.test_target_value = None
        self.step_hint = info.step_hint
        self.max_allowed_runtime_sec = max_seconds
        self.eval_period_time_sec = period.seconds  # None: this workload evaluates every eval_period_steps
        self.eval_period_steps = period.steps
        self.loss_type = getattr(spec.LossType, LOSS_TYPES.get(info.workload, "SOFTMAX_CROSS_ENTROPY"))
        self.metrics_logger = None
        self.num_train_examples = None
        self.step_loss: torch.Tensor | None = None  # the first loss_fn of the current step (the step's loss)
        self._set_shapes(model)

    def _set_shapes(self, model: nn.Module) -> None:
        modules = {name: m for name, m in model.named_modules()}
        self.param_shapes: dict[str, Any] = {}
        self.model_params_types: dict[str, Any] = {}
        for name, p in named_params(model):
            owner = modules.get(name.rpartition(".")[0], model)
            self.param_shapes[name] = self.spec.ShapeTuple(tuple(p.shape))
            self.model_params_types[name] = parameter_type(name, owner, p, self.spec)

    # ----- what submissions call ------------------------------------------------------------------------------
    def init_model_fn(self, rng: Any, dropout_rate: float | None = None, aux_dropout_rate: float | None = None
                      ) -> tuple[nn.Module, None]:
        """A fresh model drawn from ``rng`` (the trial's own model was initialised by the harness)."""
        seed = int(sum(int(x) << (32 * i) for i, x in enumerate(_ravel(rng))) % (2**63 - 1))
        model = self.task.init_model(torch.Generator().manual_seed(seed))
        self._set_shapes(model)
        return model, None

    def model_fn(self, params: nn.Module, augmented_and_preprocessed_input_batch: Mapping[str, Any],
                 model_state: Any, mode: Any, rng: Any, update_batch_norm: bool,
                 dropout_rate: float | None = None) -> tuple[Outputs, Any]:
        """The forward pass: TRAIN with gradients (batch-norm statistics updated only with ``update_batch_norm``),
        EVAL without; ``dropout_rate`` is accepted and unused (optbench's models have no dropout layers)."""
        batch = task_batch(augmented_and_preprocessed_input_batch)
        train = mode == self.spec.ForwardPassMode.TRAIN
        if params.training != train:  # Module.train walks every submodule: only when the mode changes
            params.train(train)
        if train and update_batch_norm:  # the common case, without a context manager's cost per step
            loss = self.task.loss(params, batch)
        else:
            with _frozen_norms(params, frozen=train), (contextlib.nullcontext() if train else torch.no_grad()):
                loss = self.task.loss(params, batch)
        return Outputs(loss=loss, tokens=self.task.counts(batch)[1]), model_state

    def loss_fn(self, label_batch: Any, logits_batch: Outputs, mask_batch: Any = None,
                label_smoothing: float = 0.0) -> dict[str, Any]:
        """``summed`` / ``n_valid_examples`` is the task's mean loss (label smoothing and masks are the workload's
        business here); ``per_example`` is None (an optbench task reports a mean, not per-example losses)."""
        if type(logits_batch) is not Outputs:
            raise TypeError("loss_fn expects what this workload's model_fn returned (optbench workloads compute "
                            "their loss in the forward pass)")
        if self.step_loss is None:
            self.step_loss = logits_batch.loss.detach()
        n = logits_batch.tokens
        return {"summed": logits_batch.loss * n, "n_valid_examples": n, "per_example": None}

    def is_output_params(self, param_key: str) -> bool:
        return param_key.split(".")[0] in ("head", "fc", "output", "lm_head")

    def has_reached_validation_target(self, eval_result: Mapping[str, float]) -> bool:
        value = eval_result.get(f"validation/{self.metric.name}", eval_result.get(self.metric.name))
        return value is not None and self.metric.reached(float(value), self.validation_target_value)

    def has_reached_test_target(self, eval_result: Mapping[str, float]) -> bool:
        return False  # optbench workloads have no test split


def _ravel(rng: Any) -> list[int]:
    try:
        import numpy as np

        return [int(x) for x in np.asarray(rng).ravel()]
    except (TypeError, ValueError):
        return [hash(rng) & 0xFFFFFFFF]


@contextlib.contextmanager
def _frozen_norms(model: nn.Module, *, frozen: bool) -> Iterator[None]:
    """Batch-norm layers in eval mode for one forward (``update_batch_norm=False``), restored afterwards."""
    if not frozen:
        yield
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()
