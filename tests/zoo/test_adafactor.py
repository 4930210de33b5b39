"""Adafactor against a numpy float64 transcription of Shazeer & Stern 2018 (row/column *sums*, as in the paper)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.adafactor import DEFAULTS, Adafactor, adafactor, beta2_at

SHAPES = [(6,), (4, 5), (2, 3, 4, 3)]  # vector (unfactored), matrix, conv kernel (factored over the last two dims)
EPS1 = 1e-30


def _params(dtype: torch.dtype = torch.float64) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in SHAPES]


def _grads(steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    # Per-row and per-column scales, so the factored estimate is far from G^2 and clipping is exercised.
    out = []
    for _ in range(steps):
        out.append([rng.standard_normal(s) * np.exp(rng.standard_normal(s[-1:])) for s in SHAPES])
    return out


def _run(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[np.ndarray]]) -> None:
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g).to(p.dtype)
        opt.step()


def _reference(theta, grads, *, lr, beta1, beta2, c, d, wd):
    """Paper's Algorithms 3/4 with beta2_t = min(beta2, 1 - t^-c), clipping, momentum on the clipped update."""
    theta = [x.copy() for x in theta]
    R = [np.zeros(x.shape[:-1]) if x.ndim >= 2 else None for x in theta]
    C = [np.zeros(x.shape[:-2] + x.shape[-1:]) if x.ndim >= 2 else None for x in theta]
    V = [np.zeros_like(x) for x in theta]
    M = [np.zeros_like(x) for x in theta]
    clipped = 0
    for t, gs in enumerate(grads, start=1):
        b = min(beta2, 1 - t ** (-c))
        for i, g in enumerate(gs):
            g2 = g * g + EPS1
            if g.ndim >= 2:
                R[i] = b * R[i] + (1 - b) * g2.sum(axis=-1)  # row sums, G^2 1_m
                C[i] = b * C[i] + (1 - b) * g2.sum(axis=-2)  # column sums, 1_n^T G^2
                V[i] = R[i][..., :, None] * C[i][..., None, :] / R[i].sum(axis=-1)[..., None, None]
            else:
                V[i] = b * V[i] + (1 - b) * g2
            U = g / np.sqrt(V[i])
            rms = np.sqrt(np.mean(U * U))
            clipped += rms > d
            U = U / max(1.0, rms / d)
            M[i] = beta1 * M[i] + (1 - beta1) * U
            theta[i] = theta[i] - lr * (M[i] + wd * theta[i])
    return theta, R, C, clipped


@pytest.mark.parametrize("beta1,wd", [(0.0, 0.0), (0.9, 0.1)])
def test_matches_paper_reference(beta1: float, wd: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(5)
    opt = Adafactor(params, lr=0.01, beta1=beta1, beta2=0.999, decay_rate=0.8, weight_decay=wd)
    _run(opt, params, grads)
    ref, R, C, clipped = _reference(theta0, grads, lr=0.01, beta1=beta1, beta2=0.999, c=0.8, d=1.0, wd=wd)
    assert clipped > 0  # the reference clipped at least once, so the comparison covers clipping
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
    # The stored accumulators are the paper's sums divided by the summed-over width (means).
    for p, r, c in zip(params[1:], R[1:], C[1:]):
        st = opt.state[p]
        np.testing.assert_allclose(st["row"].numpy() * p.shape[-1], r, rtol=1e-12)
        np.testing.assert_allclose(st["col"].numpy() * p.shape[-2], c, rtol=1e-12)


def test_factored_estimate_is_outer_product_over_sum() -> None:
    """V = R C / (1^T R) with R, C the row/column sums of G^2 (one step: beta2_1 = 0)."""
    g = np.random.default_rng(3).standard_normal((3, 4)) * np.array([1.0, 10.0, 0.1, 3.0])
    st = {"row": torch.zeros(3, dtype=torch.float64), "col": torch.zeros(4, dtype=torch.float64)}
    v = Adafactor.second_moment(st, torch.from_numpy(g * g + EPS1), 0.0).numpy()
    r, c = (g * g).sum(axis=1), (g * g).sum(axis=0)
    np.testing.assert_allclose(v, np.outer(r, c) / r.sum(), rtol=1e-12)
    assert not np.allclose(v, g * g)  # a genuine rank-1 approximation, not the full second moment


def test_beta2_schedule() -> None:
    assert beta2_at(1, beta2=0.999, decay_rate=0.8) == 0.0
    assert beta2_at(2, beta2=0.999, decay_rate=0.8) == pytest.approx(1 - 2**-0.8)
    assert beta2_at(10**6, beta2=0.999, decay_rate=0.8) == 0.999  # capped
    # Constant decay, bias-corrected: beta2 (1 - beta2^(t-1)) / (1 - beta2^t).
    assert beta2_at(1, beta2=0.9, decay_rate=0.0) == 0.0
    assert beta2_at(2, beta2=0.9, decay_rate=0.0) == pytest.approx(0.9 / 1.9)


@pytest.mark.parametrize("d,expect_clip", [(1.0, True), (2.0, False)])
def test_update_clipping_triggers_when_rms_exceeds_threshold(d: float, expect_clip: bool) -> None:
    """Hand-computed: constant beta2 = 0.9, no momentum; step 1 g = 0.1, step 2 g = 10 (all coordinates)."""
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = Adafactor([p], lr=0.5, beta1=0.0, beta2=0.9, decay_rate=0.0, clip_threshold=d)
    p.grad = torch.full((4,), 0.1, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((4,), -0.5, dtype=torch.float64))  # U = g / |g| = 1: RMS 1
    p.grad = torch.full((4,), 10.0, dtype=torch.float64)
    opt.step()
    b = 0.9 / 1.9
    u = 10.0 / math.sqrt(b * 0.01 + (1 - b) * 100.0)  # about 1.378 > 1
    step = min(u, d)
    assert (step < u) == expect_clip
    torch.testing.assert_close(p.detach(), torch.full((4,), -0.5 - 0.5 * step, dtype=torch.float64))


def test_relative_step_uses_parameter_scale() -> None:
    """a_t = max(eps2, RMS(theta)) * min(lr, 1/sqrt(t)); the first update is a_1 * sign(g) for a vector."""
    p = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))  # RMS = sqrt(12.5)
    p.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
    Adafactor([p], lr=1e-2, beta1=0.0, relative_step=True).step()
    a = math.sqrt(12.5) * 1e-2
    torch.testing.assert_close(p.detach(), torch.tensor([3.0 - a, -4.0 - a], dtype=torch.float64))


def test_state_dict_round_trip_continues_identically() -> None:
    a = _params(torch.float32)
    opt_a = Adafactor(a, lr=0.01, weight_decay=0.1)
    grads = _grads(6)
    _run(opt_a, a, grads[:3])
    buf = io.BytesIO()
    torch.save({"opt": opt_a.state_dict(), "params": [p.detach().clone() for p in a]}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = [nn.Parameter(t) for t in saved["params"]]
    opt_b = Adafactor(b, lr=0.01, weight_decay=0.1)
    opt_b.load_state_dict(saved["opt"])
    _run(opt_a, a, grads[3:])
    _run(opt_b, b, grads[3:])
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)


def test_bfloat16_params_keep_float32_state() -> None:
    params = _params(torch.bfloat16)
    ref = [nn.Parameter(p.detach().float()) for p in params]
    grads = _grads(3)
    opt = Adafactor(params, lr=0.01)
    _run(opt, params, grads)
    for p in params:
        assert p.dtype == torch.bfloat16
        assert all(v.dtype == torch.float32 for k, v in opt.state[p].items() if k != "step")
    _run(Adafactor(ref, lr=0.01), ref, grads)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.float(), r.detach(), rtol=2e-2, atol=2e-2)


def test_submission_builds_and_search_space_keys_are_hyperparameters() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    info = TrialInfo(workload="linreg", size="tiny", step_hint=100, max_steps=200, batch_size=8, device="cpu", seed=0)
    opt = adafactor.create(model, dict(DEFAULTS), info)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert set(adafactor.search_space()) <= set(DEFAULTS)
