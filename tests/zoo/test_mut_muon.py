"""Muon's factory: every hyperparameter reaches the right parameter group (the zoo tests run it at its defaults, so
swapped or dropped keywords survive there). Kills mutmut survivors of submissions/muon.py (docs/TESTING.md)."""

from __future__ import annotations

import pytest
from torch import nn

from optbench_submissions import muon as muon_module
from tests.zoo.helpers import short_info

HP = {"lr": 0.03, "momentum": 0.8, "nesterov": False, "ns_steps": 3, "adam_lr": 0.004, "adam_beta1": 0.7,
      "adam_beta2": 0.85, "adam_eps": 1e-7, "weight_decay": 0.25, "ns_dtype": "float32"}


@pytest.mark.parametrize("nesterov", [False, True])
def test_make_maps_every_hyperparameter(nesterov):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Linear(6, 2))
    groups = muon_module._make(model, HP | {"nesterov": nesterov}, short_info()).param_groups
    matrices = next(g for g in groups if g["use_muon"])
    others = next(g for g in groups if not g["use_muon"])
    assert (matrices["lr"], matrices["momentum"], matrices["nesterov"], matrices["ns_steps"]) == (0.03, 0.8, nesterov, 3)
    assert matrices["weight_decay"] == 0.25 and matrices["ns_dtype"] == "float32"
    assert (others["lr"], others["betas"], others["eps"]) == (0.004, (0.7, 0.85), 1e-7)
