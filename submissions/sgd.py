"""SGD with heavy-ball or Nesterov momentum and L2 weight decay, with a learning-rate schedule.

References:
  Polyak, "Some methods of speeding up the convergence of iteration methods", 1964 (heavy ball).
  Sutskever et al., "On the importance of initialization and momentum in deep learning", ICML 2013 (Nesterov form).

Update (PyTorch's convention, dampening 0), gradient g, weight decay wd, momentum mu:

    g <- g + wd * theta
    b <- mu * b + g
    d = g + mu * b   (Nesterov)   or   d = b   (heavy ball)
    theta <- theta - lr * d

``torch.optim.SGD`` implements exactly this (its foreach path batches the group); it is used here rather than
rewritten because SGD is the reference point, not a method under study, and its step is checked against the
equations above in tests/zoo/test_sgd.py (float64 numpy references over several steps, weight decay included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from optbench.api import SubmissionSpec, TrialInfo
from optbench_submissions._common import SCHEDULE_DEFAULTS, search_space_file, with_schedule

DEFAULTS: Mapping[str, Any] = {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, **SCHEDULE_DEFAULTS}


def _make(nesterov: bool) -> Callable[[nn.Module, Mapping[str, Any], TrialInfo], torch.optim.SGD]:
    def make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> torch.optim.SGD:
        return torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"],
                               weight_decay=hp["weight_decay"], nesterov=nesterov and hp["momentum"] > 0)

    return make


sgd = SubmissionSpec(
    name="sgd", factory=with_schedule(_make(False)), defaults=DEFAULTS,
    search_space_file=search_space_file("sgd"), paper="Polyak 1964 (heavy-ball momentum)",
)
nesterov = SubmissionSpec(
    name="nesterov", factory=with_schedule(_make(True)), defaults=DEFAULTS,
    search_space_file=search_space_file("sgd"), paper="Sutskever et al. 2013 (Nesterov momentum)",
)
