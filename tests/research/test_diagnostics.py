"""Curvature and noise diagnostics against closed forms: the power iteration finds the exact top eigenvalue of a
quadratic (plain and preconditioned) and of linreg's batch Hessian X^T X / B; the simple noise scale matches its
closed form on linear regression; measuring leaves the model and the trial's data order untouched."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from optbench.engine.diagnostics import Diagnostics, adam_preconditioner, gradient_noise_scale, top_hessian_eigenvalue
from optbench_workloads.linreg import SIZES, LinRegTask


def _spd(d: int, top: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.linspace(0.1, 0.6 * top, d, dtype=torch.float64)
    eig[-1] = top
    return q @ torch.diag(eig) @ q.T


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    a = _spd(20, top=7.5)
    w = torch.randn(20, dtype=torch.float64, requires_grad=True)
    est = top_hessian_eigenvalue(lambda: 0.5 * w @ a @ w + w.sum(), [w], generator=torch.Generator().manual_seed(1),
                                 iters=500, tol=1e-10)
    assert est == pytest.approx(float(torch.linalg.eigvalsh(a)[-1]), rel=1e-6)


def test_preconditioned_sharpness_is_the_top_eigenvalue_of_p_inverse_h():
    a = _spd(12, top=3.0, seed=2)
    p = torch.linspace(0.5, 4.0, 12, dtype=torch.float64)
    w = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    est = top_hessian_eigenvalue(lambda: 0.5 * w @ a @ w, [w], generator=torch.Generator().manual_seed(0),
                                 iters=1000, tol=1e-12, preconditioner=[p])
    s = p.rsqrt()
    exact = float(torch.linalg.eigvalsh(s[:, None] * a * s[None, :])[-1])
    assert est == pytest.approx(exact, rel=1e-6)
    assert abs(exact - float(torch.linalg.eigvalsh(a)[-1])) > 0.1  # the preconditioner matters here


def _linreg(rotate: bool = False) -> LinRegTask:
    size = replace(SIZES["tiny"], options={**SIZES["tiny"].options, "rotate": rotate})
    return LinRegTask(size, torch.device("cpu"))


def test_sharpness_of_linreg_is_the_top_eigenvalue_of_the_batch_covariance():
    task = _linreg(rotate=True)
    model = task.init_model(torch.Generator())
    diag = Diagnostics(task, seed=3, batch_size=64, noise_batches=0, iters=300)
    got = diag.measure(model, lr=0.01)
    x = diag.batch.x.double()
    assert got["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(x.T @ x / 64)[-1]), rel=1e-3)
    assert got["eos_threshold"] == pytest.approx(200.0)


@pytest.mark.parametrize("shrink", [0.0, 0.5])
def test_noise_scale_matches_its_closed_form_on_linear_regression(shrink):
    # Per-example gradient g = x (x.(w - w*) - sigma eps), x ~ N(0, H), delta = w - w*: G = H delta and, by the
    # Gaussian fourth moment, tr(Sigma) = |H delta|^2 + (delta' H delta + sigma^2) tr H.
    task = _linreg()
    model = task.init_model(torch.Generator())
    with torch.no_grad():
        model.weight.copy_(shrink * task.w_star.reshape(1, -1))
    lam, delta = task.lam64, (shrink - 1.0) * task.w_star64
    grad_sq = float((lam * delta).pow(2).sum())
    trace = grad_sq + (float((lam * delta * delta).sum()) + task.sigma**2) * float(lam.sum())
    got = gradient_noise_scale(task, model, batch_size=16, batches=4000, generator=torch.Generator().manual_seed(0))
    assert got["grad_sq"] == pytest.approx(grad_sq, rel=0.06)
    assert got["trace_cov"] == pytest.approx(trace, rel=0.05)
    assert got["noise_scale"] == pytest.approx(trace / grad_sq, rel=0.08)


def test_measuring_leaves_the_model_its_grads_and_mode_alone():
    task = _linreg(rotate=True)
    model = task.init_model(torch.Generator())
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for i in range(3):
        task.loss(model, task.next_batch(8, torch.Generator().manual_seed(i))).backward()
        opt.step()
    weight, grad = model.weight.detach().clone(), model.weight.grad.clone()
    diag = Diagnostics(task, seed=0, batch_size=16, noise_batches=4, iters=5)
    got = diag.measure(model, lr=0.01, updater=opt)
    assert model.training and torch.equal(model.weight, weight) and torch.equal(model.weight.grad, grad)
    assert set(got) >= {"sharpness", "eos_threshold", "preconditioned_sharpness", "adaptive_eos_threshold",
                        "noise_scale", "grad_sq", "trace_cov"}
    assert got["adaptive_eos_threshold"] == pytest.approx(3.8 / 0.001)  # (2 + 2 b1) / ((1 - b1) lr), b1 = 0.9
    assert all(isinstance(v, float) for v in got.values())


def test_adam_preconditioner_is_sqrt_v_hat_plus_eps_and_none_without_moments():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-3)
    assert adam_preconditioner(opt, [p]) is None  # no state yet
    p.grad = torch.tensor([3.0, 4.0])
    opt.step()
    (pre,) = adam_preconditioner(opt, [p])
    torch.testing.assert_close(pre, torch.tensor([3.0, 4.0]) + 1e-3)  # v_hat = g^2 after one step
    assert adam_preconditioner(torch.optim.SGD([p], lr=0.1), [p]) is None


def test_noise_estimates_are_unbiased_even_from_two_batches():
    # With k = 2 batches the finite-k corrections are large (a factor 2 on tr(Sigma)): the mean over many
    # estimates still lands on the closed form.
    task = _linreg()
    model = task.init_model(torch.Generator())
    lam, delta = task.lam64, -task.w_star64
    grad_sq = float((lam * delta).pow(2).sum())
    trace = grad_sq + (float((lam * delta * delta).sum()) + task.sigma**2) * float(lam.sum())
    gen = torch.Generator().manual_seed(0)
    runs = [gradient_noise_scale(task, model, batch_size=8, batches=2, generator=gen) for _ in range(3000)]
    assert sum(r["trace_cov"] for r in runs) / len(runs) == pytest.approx(trace, rel=0.05)
    assert sum(r["grad_sq"] for r in runs) / len(runs) == pytest.approx(grad_sq, rel=0.15)


class _RecordingTask:
    """linreg whose loss notes the model's mode at each call (the diagnostics must measure in eval mode)."""

    def __init__(self) -> None:
        self.inner, self.modes = _linreg(), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, model, batch):
        self.modes.append(model.training)
        return self.inner.loss(model, batch)


def test_measures_in_eval_mode_on_a_fixed_batch_of_its_own_seed():
    task = _RecordingTask()
    model = task.init_model(torch.Generator())
    Diagnostics(task, seed=0, batch_size=8, noise_batches=2, iters=3).measure(model, lr=0.1)
    assert task.modes and not any(task.modes) and model.training
    same = [Diagnostics(task, seed=s, batch_size=8, noise_batches=0).batch.x for s in (5, 5, 6)]
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], same[2])
