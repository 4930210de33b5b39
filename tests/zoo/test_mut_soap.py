"""SOAP's factory: every hyperparameter reaches the optimizer (the zoo tests run the factory at its defaults, so a
dropped keyword that falls back to the constructor's default survives there). Kills mutmut survivors of
submissions/soap.py (benchmarks/mutation.py; docs/TESTING.md)."""

from __future__ import annotations

from torch import nn

from optbench_submissions import soap as soap_module
from tests.zoo.helpers import short_info

HP = {"lr": 0.004, "beta1": 0.8, "beta2": 0.85, "shampoo_beta": 0.7, "eps": 1e-6, "weight_decay": 0.3,
      "precondition_frequency": 7, "max_precond_dim": 64, "one_sided": True}


def test_make_maps_every_hyperparameter():
    group = soap_module._make(nn.Linear(4, 3), HP, short_info()).param_groups[0]
    got = {k: group[k] for k in ("lr", "betas", "shampoo_beta", "eps", "weight_decay", "precondition_frequency",
                                 "max_precond_dim", "one_sided")}
    assert got == {"lr": 0.004, "betas": (0.8, 0.85), "shampoo_beta": 0.7, "eps": 1e-6, "weight_decay": 0.3,
                   "precondition_frequency": 7, "max_precond_dim": 64, "one_sided": True}
