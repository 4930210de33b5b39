"""Lion and Signum against numpy float64 transcriptions of the papers' update rules."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.lion import LION_DEFAULTS, SIGNUM_DEFAULTS, Lion, Signum, lion, signum

SHAPES = [(5,), (3, 4), (2, 3, 2, 2)]  # bias, matrix, conv kernel


def _params(dtype: torch.dtype = torch.float64, seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in SHAPES]


def _grads(steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[np.ndarray]]) -> None:
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g).to(p.dtype)
        opt.step()


def _lion_reference(theta, grads, lr, b1, b2, wd):
    """Chen et al. 2023, Algorithm 2, in float64."""
    theta = [t.copy() for t in theta]
    m = [np.zeros_like(t) for t in theta]
    for gs in grads:
        for i, g in enumerate(gs):
            u = np.sign(b1 * m[i] + (1 - b1) * g)
            theta[i] = theta[i] - lr * (u + wd * theta[i])
            m[i] = b2 * m[i] + (1 - b2) * g
    return theta


def _signum_reference(theta, grads, lr, beta, wd):
    theta = [t.copy() for t in theta]
    m = [np.zeros_like(t) for t in theta]
    for gs in grads:
        for i, g in enumerate(gs):
            m[i] = beta * m[i] + (1 - beta) * g
            theta[i] = theta[i] - lr * (np.sign(m[i]) + wd * theta[i])
    return theta


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_reference(wd: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(4)
    _run(Lion(params, lr=0.01, betas=(0.9, 0.99), weight_decay=wd), params, grads)
    for p, ref in zip(params, _lion_reference(theta0, grads, 0.01, 0.9, 0.99, wd)):
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_signum_matches_reference(wd: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(4)
    _run(Signum(params, lr=0.01, beta=0.9, weight_decay=wd), params, grads)
    for p, ref in zip(params, _signum_reference(theta0, grads, 0.01, 0.9, wd)):
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("make", [lambda ps: Lion(ps, lr=2**-6), lambda ps: Signum(ps, lr=2**-6)])
def test_every_coordinate_moves_by_exactly_lr(make) -> None:
    """Without weight decay the step is lr * sign(.): every coordinate with a nonzero gradient moves by lr."""
    params = _params()
    before = [p.detach().clone() for p in params]
    _run(make(params), params, _grads(1))
    for p, b in zip(params, before):
        assert torch.equal((b - p.detach()).abs(), torch.full_like(b, 2**-6))


def test_lion_first_step_is_sign_of_gradient() -> None:
    """m starts at 0, so step 1 is -lr * sign(g) whatever beta1 is (hand-computed)."""
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
    p.grad = torch.tensor([0.3, -4.0, 0.0, -1e-9], dtype=torch.float64)
    Lion([p], lr=0.1, betas=(0.5, 0.99), weight_decay=1.0).step()
    # theta * (1 - 0.1) - 0.1 * sign(g)
    expected = torch.tensor([0.9 - 0.1, -1.8 + 0.1, 0.45, 2.7 + 0.1], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("make", [lambda ps: Lion(ps, lr=0.01, weight_decay=0.1),
                                  lambda ps: Signum(ps, lr=0.01, weight_decay=0.1)])
def test_state_dict_round_trip_continues_identically(make) -> None:
    a = _params(torch.float32)
    opt_a = make(a)
    grads = _grads(6)
    _run(opt_a, a, grads[:3])
    buf = io.BytesIO()
    torch.save({"opt": opt_a.state_dict(), "params": [p.detach().clone() for p in a]}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = [nn.Parameter(t) for t in saved["params"]]
    opt_b = make(b)
    opt_b.load_state_dict(saved["opt"])
    _run(opt_a, a, grads[3:])
    _run(opt_b, b, grads[3:])
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("cls", [Lion, Signum])
def test_bfloat16_params_keep_float32_state(cls) -> None:
    params = _params(torch.bfloat16)
    ref = [nn.Parameter(p.detach().float()) for p in params]
    grads = _grads(3)
    opt = cls(params, lr=0.01, weight_decay=0.1)
    _run(opt, params, grads)
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in params)
    assert all(p.dtype == torch.bfloat16 for p in params)
    # Same trajectory as float32 up to bf16 rounding of the parameters each step.
    _run(cls(ref, lr=0.01, weight_decay=0.1), ref, grads)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.float(), r.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("spec,defaults", [(lion, LION_DEFAULTS), (signum, SIGNUM_DEFAULTS)])
def test_submission_builds_and_search_space_keys_are_hyperparameters(spec, defaults) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    info = TrialInfo(workload="linreg", size="tiny", step_hint=100, max_steps=200, batch_size=8, device="cpu", seed=0)
    opt = spec.create(model, dict(defaults), info)
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert set(spec.search_space()) <= set(defaults)
