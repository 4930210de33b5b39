"""AdEMAMix and Simplified-AdEMAMix against numpy float64 transcriptions of the papers' algorithms."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.ademamix import (
    ADEMAMIX_DEFAULTS,
    SIMPLIFIED_DEFAULTS,
    AdEMAMix,
    SimplifiedAdEMAMix,
    ademamix,
    alpha_at,
    beta_at,
    simplified_ademamix,
)

SHAPES = [(5,), (3, 4), (2, 3, 2, 2)]


def _params(dtype: torch.dtype = torch.float64) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in SHAPES]


def _grads(steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[np.ndarray]]) -> None:
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g).to(p.dtype)
        opt.step()


def _half_life_schedule(t: int, b0: float, b1: float, T: int) -> float:
    """The paper's beta3 scheduler written through the EMA half-life f(beta) = ln(0.5) / ln(beta) - 1."""
    if t >= T:
        return b1
    f = lambda b: math.log(0.5) / math.log(b) - 1  # noqa: E731
    a = t / T
    return 0.5 ** (1 / ((1 - a) * f(b0) + a * f(b1) + 1))


@pytest.mark.parametrize("t", [1, 10, 50, 99, 100, 500])
def test_beta_schedule_interpolates_half_life(t: int) -> None:
    assert beta_at(t, beta_start=0.9, beta_end=0.9999, warmup=100) == pytest.approx(
        _half_life_schedule(t, 0.9, 0.9999, 100), rel=1e-12)


def test_schedules_endpoints_and_monotone() -> None:
    assert beta_at(0, beta_start=0.9, beta_end=0.9999, warmup=100) == pytest.approx(0.9)
    assert beta_at(100, beta_start=0.9, beta_end=0.9999, warmup=100) == 0.9999
    assert beta_at(1, beta_start=0.9, beta_end=0.9999, warmup=0) == 0.9999
    betas = [beta_at(t, beta_start=0.9, beta_end=0.9999, warmup=100) for t in range(101)]
    assert all(a < b for a, b in zip(betas, betas[1:]))
    assert [alpha_at(t, alpha=8.0, warmup=4) for t in (1, 2, 4, 9)] == [2.0, 4.0, 8.0, 8.0]
    assert alpha_at(1, alpha=8.0, warmup=0) == 8.0


def _ademamix_reference(theta, grads, *, lr, b1, b2, b3, alpha, T, eps, wd):
    """Pagliardini et al. 2024, Algorithm 1, with the linear alpha and half-life beta3 schedulers."""
    theta = [x.copy() for x in theta]
    m1 = [np.zeros_like(x) for x in theta]
    m2 = [np.zeros_like(x) for x in theta]
    nu = [np.zeros_like(x) for x in theta]
    for t, gs in enumerate(grads, start=1):
        a_t = min(t * alpha / T, alpha)
        b3_t = _half_life_schedule(t, b1, b3, T)
        for i, g in enumerate(gs):
            m1[i] = b1 * m1[i] + (1 - b1) * g
            m2[i] = b3_t * m2[i] + (1 - b3_t) * g
            nu[i] = b2 * nu[i] + (1 - b2) * g * g
            m1_hat = m1[i] / (1 - b1**t)
            nu_hat = nu[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * ((m1_hat + a_t * m2[i]) / (np.sqrt(nu_hat) + eps) + wd * theta[i])
    return theta


def _simplified_reference(theta, grads, *, lr, b1, b2, min_b1, alpha, T, eps, wd):
    """Morwani et al. 2025, Simplified-AdEMAMix: m = beta1_t m + g; (alpha g + m) / (sqrt(v_hat) + eps)."""
    theta = [x.copy() for x in theta]
    m = [np.zeros_like(x) for x in theta]
    nu = [np.zeros_like(x) for x in theta]
    for t, gs in enumerate(grads, start=1):
        b1_t = _half_life_schedule(t, min_b1, b1, T)
        for i, g in enumerate(gs):
            m[i] = b1_t * m[i] + g
            nu[i] = b2 * nu[i] + (1 - b2) * g * g
            nu_hat = nu[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * ((alpha * g + m[i]) / (np.sqrt(nu_hat) + eps) + wd * theta[i])
    return theta


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_ademamix_matches_reference_through_warmup(wd: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(6)  # warmup T = 4: steps inside and after it
    opt = AdEMAMix(params, lr=0.01, betas=(0.9, 0.999, 0.9999), alpha=5.0, warmup=4, eps=1e-8, weight_decay=wd)
    _run(opt, params, grads)
    ref = _ademamix_reference(theta0, grads, lr=0.01, b1=0.9, b2=0.999, b3=0.9999, alpha=5.0, T=4, eps=1e-8, wd=wd)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alpha,wd", [(0.0, 0.0), (2.0, 0.1)])
def test_simplified_matches_reference_through_warmup(alpha: float, wd: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(6)
    opt = SimplifiedAdEMAMix(params, lr=1e-3, betas=(0.99, 0.95), alpha=alpha, min_beta1=0.9, warmup=4, eps=1e-8,
                             weight_decay=wd)
    _run(opt, params, grads)
    ref = _simplified_reference(theta0, grads, lr=1e-3, b1=0.99, b2=0.95, min_b1=0.9, alpha=alpha, T=4, eps=1e-8,
                                wd=wd)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)


def test_simplified_momentum_is_a_sum_not_an_average() -> None:
    """Hand-computed, constant g = 1 and beta1 = 0.5 (no warmup): m = 1, 1.5, 1.75; v_hat = 1; step = lr * m."""
    p = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = SimplifiedAdEMAMix([p], lr=1.0, betas=(0.5, 0.9), alpha=0.0, min_beta1=0.5, eps=0.0)
    for _ in range(3):
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    assert p.item() == pytest.approx(-(1 + 1.5 + 1.75))


@pytest.mark.parametrize("make", [
    lambda ps: AdEMAMix(ps, lr=0.01, alpha=5.0, warmup=5, weight_decay=0.1),
    lambda ps: SimplifiedAdEMAMix(ps, lr=1e-3, alpha=2.0, warmup=5, weight_decay=0.1),
])
def test_state_dict_round_trip_continues_identically(make) -> None:
    a = _params(torch.float32)
    opt_a = make(a)
    grads = _grads(6)
    _run(opt_a, a, grads[:3])  # stop mid-warmup: the schedules must resume at step 4
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


@pytest.mark.parametrize("cls", [AdEMAMix, SimplifiedAdEMAMix])
def test_bfloat16_params_keep_float32_state(cls) -> None:
    params = _params(torch.bfloat16)
    ref = [nn.Parameter(p.detach().float()) for p in params]
    grads = _grads(3)
    opt = cls(params, lr=1e-3, warmup=10)
    _run(opt, params, grads)
    for p in params:
        assert p.dtype == torch.bfloat16
        assert all(v.dtype == torch.float32 for k, v in opt.state[p].items() if k != "step")
    _run(cls(ref, lr=1e-3, warmup=10), ref, grads)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.float(), r.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("spec,defaults", [(ademamix, ADEMAMIX_DEFAULTS), (simplified_ademamix, SIMPLIFIED_DEFAULTS)])
@pytest.mark.parametrize("step_hint,max_steps,expected", [(100, 300, 100), (0, 300, 300)])
def test_warmup_spans_the_run(spec, defaults, step_hint: int, max_steps: int, expected: int) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    info = TrialInfo(workload="linreg", size="tiny", step_hint=step_hint, max_steps=max_steps, batch_size=8,
                     device="cpu", seed=0)
    opt = spec.create(model, dict(defaults), info)
    assert opt.param_groups[0]["warmup"] == expected
    model(torch.randn(8, 4)).pow(2).mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert set(spec.search_space()) <= set(defaults)
