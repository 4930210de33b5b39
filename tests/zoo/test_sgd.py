"""SGD (heavy ball) and Nesterov against numpy float64 transcriptions, independent of torch.optim.SGD.

Heavy ball: Polyak 1964, in PyTorch's form (dampening 0): b_t = mu * b_{t-1} + g_t, theta <- theta - lr * b_t.
Nesterov: Sutskever et al. 2013 rewritten at the look-ahead point (PyTorch's form): d_t = g_t + mu * b_t.
Weight decay is L2 (coupled): g_t = grad + wd * theta, so it enters the momentum. The built-ins are checked through
their registered factories, so the mapping from hyperparameters (momentum, weight_decay, the nesterov flag) is what
is tested, not only torch's kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optbench.plugins.registry import load_submission
from tests.zoo.helpers import short_info


def sgd_reference(theta, grads, *, lr, mu, wd, nesterov):
    theta = [t.copy() for t in theta]
    b = [np.zeros_like(t) for t in theta]
    for gs in grads:
        for i, grad in enumerate(gs):
            g = grad + wd * theta[i]
            b[i] = mu * b[i] + g
            d = g + mu * b[i] if nesterov else b[i]
            theta[i] = theta[i] - lr * d
    return theta


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3, dtype=torch.float64), nn.Linear(3, 2, bias=False, dtype=torch.float64))


@pytest.mark.parametrize("name,nesterov", [("sgd", False), ("nesterov", True)])
@pytest.mark.parametrize("mu,wd", [(0.9, 0.0), (0.9, 0.2), (0.0, 0.2)])
def test_matches_reference_over_several_steps(name: str, nesterov: bool, mu: float, wd: float) -> None:
    sub = load_submission(name).obj
    hp = {**sub.defaults, "lr": 0.05, "momentum": mu, "weight_decay": wd, "schedule": "constant",
          "warmup_frac": 0.0}
    model = _model()
    params = list(model.parameters())
    theta0 = [p.detach().numpy().copy() for p in params]
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(tuple(p.shape)) for p in params] for _ in range(5)]
    opt = sub.create(model, hp, short_info())
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
    want = sgd_reference(theta0, grads, lr=0.05, mu=mu, wd=wd, nesterov=nesterov)
    for p, ref in zip(params, want):
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-12, atol=1e-14)


def test_nesterov_and_heavy_ball_differ() -> None:
    """Guards the reference itself: with momentum the two forms give different iterates after two steps."""
    theta = [np.ones(3)]
    grads = [[np.array([1.0, -2.0, 0.5])], [np.array([0.3, 0.1, -1.0])]]
    hb = sgd_reference(theta, grads, lr=0.1, mu=0.9, wd=0.0, nesterov=False)
    nag = sgd_reference(theta, grads, lr=0.1, mu=0.9, wd=0.0, nesterov=True)
    assert not np.allclose(hb[0], nag[0])
