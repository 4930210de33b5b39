"""AdamW and NAdamW against numpy float64 transcriptions of the papers, written independently of the code under test.

AdamW: Loshchilov & Hutter 2019 (arXiv 1711.05101), Algorithm 2 with schedule multiplier eta_t = 1 and the decay
folded into the learning rate as PyTorch/AlgoPerf do (theta <- theta - lr * wd * theta, *decoupled*: the decay never
enters the moments), with Kingma & Ba's bias corrections m / (1 - b1^t), v / (1 - b2^t) and eps outside the square
root. NAdamW: AlgoPerf's NAdamW baseline (Dozat 2016's look-ahead: the step uses b1 * m_t + (1 - b1) * g_t in place
of m_t), same decay and corrections. Several steps, nonzero weight decay, a bias correction far from 1 (b2 = 0.999
over 5 steps), so a coupled (L2) decay, a decay without lr, or an off-by-one / missing-sqrt correction all fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optbench_submissions.adamw import AdamW
from tests.zoo.helpers import short_info

SHAPES = [(5,), (3, 4), (2, 3, 2)]
LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8


def _params(seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in SHAPES]


def _grads(steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]


def _run(opt, params: list[nn.Parameter], grads: list[list[np.ndarray]]) -> None:
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()


def adamw_reference(theta, grads, *, lr, b1, b2, eps, wd, nesterov):
    """Loshchilov & Hutter 2019, Algorithm 2 (eta_t = 1); ``nesterov``: AlgoPerf's NAdamW look-ahead."""
    theta = [t.copy() for t in theta]
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            first = b1 * m[i] + (1 - b1) * g if nesterov else m[i]
            m_hat = first / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * wd * theta[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("nesterov", [False, True], ids=["adamw", "nadamw"])
@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_matches_reference_over_several_steps(nesterov: bool, wd: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(5)
    _run(AdamW(params, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=wd, nesterov=nesterov), params, grads)
    want = adamw_reference(theta0, grads, lr=LR, b1=B1, b2=B2, eps=EPS, wd=wd, nesterov=nesterov)
    for p, ref in zip(params, want):
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,nesterov", [("adamw", False), ("nadamw", True)])
def test_registered_submission_wires_the_hyperparameters(name: str, nesterov: bool) -> None:
    """The built-in, built from hyperparameters (constant schedule), takes the same steps as the reference."""
    from optbench.plugins.registry import load_submission

    sub = load_submission(name).obj
    hp = {**sub.defaults, "lr": LR, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.3,
          "schedule": "constant", "warmup_frac": 0.0}
    model = nn.Sequential(nn.Linear(4, 3, dtype=torch.float64))
    params = list(model.parameters())
    theta0 = [p.detach().numpy().copy() for p in params]
    rng = np.random.default_rng(2)
    grads = [[rng.standard_normal(tuple(p.shape)) for p in params] for _ in range(4)]
    _run(sub.create(model, hp, short_info()), params, grads)
    want = adamw_reference(theta0, grads, lr=LR, b1=0.8, b2=0.99, eps=1e-6, wd=0.3, nesterov=nesterov)
    for p, ref in zip(params, want):
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-12, atol=1e-14)
