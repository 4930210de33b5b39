"""The SGD/Nesterov factory maker ``_make`` called directly. The registered factories are built when the module is
imported, before mutmut switches a mutant on, so without a direct call no test reaches ``_make``'s mutants (mutmut
then stops with "Unable to force test failures"). Kills mutmut survivors of submissions/sgd.py (docs/TESTING.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optbench_submissions import sgd as sgd_module
from tests.zoo.helpers import short_info


@pytest.mark.parametrize(("nesterov", "momentum", "expect_nesterov"),
                         [(False, 0.9, False), (True, 0.9, True), (True, 0.0, False)])
def test_make_maps_every_hyperparameter(nesterov, momentum, expect_nesterov):
    # Nesterov needs momentum > 0 (torch refuses nesterov=True with momentum 0): the flag follows it.
    model = nn.Linear(3, 2)
    hp = {"lr": 0.07, "momentum": momentum, "weight_decay": 0.3}
    opt = sgd_module._make(nesterov)(model, hp, short_info())
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == \
        (0.07, momentum, 0.3, expect_nesterov)
    assert group["dampening"] == 0
