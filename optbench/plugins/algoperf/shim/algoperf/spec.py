"""The submission API's names, as AlgoPerf's ``algoperf/spec.py`` declares them (types, enums, the exception).

Workloads here are optbench's (:class:`optbench.plugins.algoperf.view.WorkloadView`); :class:`Workload` is only the
base class a submission may name in annotations or ``isinstance`` checks.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Tuple, Union  # noqa: UP035  (the aliases mirror AlgoPerf's)


class LossType(enum.Enum):
    SOFTMAX_CROSS_ENTROPY = 0
    SIGMOID_CROSS_ENTROPY = 1
    MEAN_SQUARED_ERROR = 2
    CTC_LOSS = 3
    MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
    TRAIN = 0
    EVAL = 1


class ParameterType(enum.Enum):
    WEIGHT = 0
    BIAS = 1
    CONV_WEIGHT = 2
    BATCH_NORM_SCALE = 3
    BATCH_NORM_BIAS = 4
    LAYER_NORM_SCALE = 5
    LAYER_NORM_BIAS = 6
    EMBEDDING = 7
    ATTENTION_Q = 8
    ATTENTION_K = 9
    ATTENTION_V = 10
    ATTENTION_OUT = 11
    ATTENTION_QKV = 12
    ATTENTION_KV = 13
    ATTENTION_BIAS = 14


class ShapeTuple:
    """A parameter's shape as one leaf (so that tree utilities do not walk into the tuple)."""

    def __init__(self, shape_tuple: tuple[int, ...]) -> None:
        self.shape_tuple = tuple(shape_tuple)

    def __repr__(self) -> str:
        return f"ShapeTuple({self.shape_tuple})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShapeTuple) and self.shape_tuple == other.shape_tuple

    def __hash__(self) -> int:
        return hash(self.shape_tuple)


class TrainingCompleteError(Exception):
    """Raised by ``update_params`` to end training: one more (free) evaluation follows, then the trial ends."""


class Workload:
    """Base class of AlgoPerf workloads (optbench's view of its own workloads subclasses it)."""


Tensor = Any
Shape = Union[Tuple[int, ...], ShapeTuple]
ParameterShapeTree = Dict[str, Any]
ParameterKey = str
ParameterContainer = Any  # the torch.nn.Module, for PyTorch submissions
ParameterTypeTree = Dict[str, Any]
RandomState = Any
OptimizerState = Union[Dict[str, Any], Tuple[Any, Any]]
Hyperparameters = Any
Timing = int
Steps = int
ModelAuxiliaryState = Any
ModelInitState = Tuple[ParameterContainer, ModelAuxiliaryState]
UpdateReturn = Tuple[OptimizerState, ParameterContainer, ModelAuxiliaryState]
