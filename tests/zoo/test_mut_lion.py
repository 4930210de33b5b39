"""Lion's and Signum's constructor bounds and defaults, and their factory functions' hyperparameter mapping.
Each test kills mutmut survivors of submissions/lion.py (benchmarks/mutation.py; docs/TESTING.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optbench_submissions import lion as lion_module
from optbench_submissions.lion import Lion, Signum
from tests.zoo.helpers import short_info


def _p() -> list[nn.Parameter]:
    return [nn.Parameter(torch.ones(3))]


def test_defaults():
    lion = Lion(_p()).param_groups[0]
    assert (lion["lr"], lion["betas"], lion["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)
    signum = Signum(_p()).param_groups[0]
    assert (signum["lr"], signum["beta"], signum["weight_decay"]) == (1e-4, 0.9, 0.0)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"weight_decay": 0.0}, {"betas": (0.0, 0.0)}, {"betas": (1.0, 1.0)},
                                    {"betas": (0.0, 0.5)}, {"betas": (0.5, 0.0)}, {"betas": (1.0, 0.5)},
                                    {"betas": (0.5, 1.0)}])
def test_lion_boundary_hyperparameters_are_accepted(kwargs):
    Lion(_p(), **kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": -1e-3}, {"weight_decay": -0.1}, {"betas": (1.5, 0.5)},
                                    {"betas": (0.5, 1.5)}, {"betas": (-0.1, 0.5)}, {"betas": (0.5, -0.1)}])
def test_lion_out_of_range_hyperparameters_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"^invalid Lion hyperparameters lr=.* betas=.* wd="):
        Lion(_p(), **kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"weight_decay": 0.0}, {"beta": 0.0}, {"beta": 0.999}])
def test_signum_boundary_hyperparameters_are_accepted(kwargs):
    Signum(_p(), **kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": -1e-3}, {"weight_decay": -0.1}, {"beta": 1.0}, {"beta": 1.5},
                                    {"beta": -0.1}])
def test_signum_out_of_range_hyperparameters_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"^invalid Signum hyperparameters lr=.* beta=.* wd="):
        Signum(_p(), **kwargs)


def test_factories_map_every_hyperparameter():
    model = nn.Linear(3, 2)
    hp = {"lr": 0.02, "beta1": 0.7, "beta2": 0.8, "weight_decay": 0.4}
    lion = lion_module._make_lion(model, hp, short_info()).param_groups[0]
    assert (lion["lr"], lion["betas"], lion["weight_decay"]) == (0.02, (0.7, 0.8), 0.4)
    signum = lion_module._make_signum(model, hp, short_info()).param_groups[0]
    assert (signum["lr"], signum["beta"], signum["weight_decay"]) == (0.02, 0.7, 0.4)
    assert [id(p) for p in signum["params"]] == [id(p) for p in model.parameters()]
