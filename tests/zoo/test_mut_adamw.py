"""AdamW's constructor bounds and defaults, and the factory maker ``_make`` called directly: the registered
factories are built when the module is imported, before mutmut switches a mutant on, so only a direct call
reaches ``_make``'s mutants. Each test kills mutmut survivors of submissions/adamw.py (docs/TESTING.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optbench_submissions import adamw as adamw_module
from optbench_submissions.adamw import AdamW
from tests.zoo.helpers import short_info

HP = {"lr": 0.03, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.2}


def _p() -> list[nn.Parameter]:
    return [nn.Parameter(torch.ones(3))]


def test_defaults():
    group = AdamW(_p()).param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["nesterov"]) == \
        (1e-3, (0.9, 0.999), 1e-8, 0.0, False)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"eps": 0.0}, {"weight_decay": 0.0}, {"betas": (0.0, 0.0)},
                                    {"betas": (0.0, 0.5)}, {"betas": (0.5, 0.0)}])
def test_boundary_hyperparameters_are_accepted(kwargs):
    AdamW(_p(), **kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": -1e-3}, {"eps": -1e-8}, {"weight_decay": -0.1}, {"betas": (1.0, 0.5)},
                                    {"betas": (0.5, 1.0)}, {"betas": (1.5, 0.5)}, {"betas": (0.5, 1.5)},
                                    {"betas": (-0.1, 0.5)}, {"betas": (0.5, -0.1)}])
def test_out_of_range_hyperparameters_are_refused_with_their_values(kwargs):
    with pytest.raises(ValueError, match=r"^invalid AdamW hyperparameters lr=.* betas=.* eps=.* wd="):
        AdamW(_p(), **kwargs)


@pytest.mark.parametrize("nesterov", [False, True])
def test_make_maps_every_hyperparameter(nesterov):
    model = nn.Linear(3, 2)
    opt = adamw_module._make(nesterov)(model, HP, short_info())
    assert isinstance(opt, AdamW)
    group = opt.param_groups[0]
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["nesterov"]) == \
        (0.03, (0.8, 0.95), 1e-6, 0.2, nesterov)
