"""Shampoo with Adam grafting against a dense numpy float64 transcription (Gupta et al. 2018; Anil et al. 2020)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.shampoo import DEFAULTS, Shampoo, inverse_root, shampoo

# A square matrix, a wide one whose 6 columns exceed max_precond_dim=4 (left side only), a bias (AdamW).
SHAPES = [(4, 4), (3, 6), (5,)]
HP = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8, matrix_eps=1e-4, weight_decay=0.1, max_precond_dim=4)


def _params(shapes=SHAPES, dtype=torch.float64, seed=0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype)) for s in shapes]


def _grads(steps: int, shapes=SHAPES, seed=1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[np.ndarray]]) -> None:
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.from_numpy(g).to(p.dtype)
        opt.step()


def _root(f: np.ndarray, exponent: float, matrix_eps: float) -> np.ndarray:
    """F^-e by eigh in float64, damped by matrix_eps times the largest eigenvalue."""
    lam, u = np.linalg.eigh(f)
    lam = np.maximum(lam, 0)
    return (u * (lam + matrix_eps * lam.max()) ** -exponent) @ u.T


def _shampoo_matrix(theta, grads, *, lr, betas, shampoo_beta, eps, matrix_eps, exponent, weight_decay,
                    max_precond_dim, freq, start):
    b1, b2 = betas
    theta = theta.copy()
    m_dim, n_dim = theta.shape
    L = np.zeros((m_dim, m_dim)) if m_dim <= max_precond_dim else None
    R = np.zeros((n_dim, n_dim)) if n_dim <= max_precond_dim else None
    PL, PR = np.eye(m_dim), np.eye(n_dim)
    M, v = np.zeros_like(theta), np.zeros_like(theta)
    w = 1.0 if shampoo_beta == 1 else 1 - shampoo_beta
    for t, g in enumerate(grads, start=1):
        if L is not None:
            L = shampoo_beta * L + w * g @ g.T
        if R is not None:
            R = shampoo_beta * R + w * g.T @ g
        if t >= start and (t == start or t % freq == 0):
            PL = _root(L, exponent, matrix_eps) if L is not None else PL
            PR = _root(R, exponent, matrix_eps) if R is not None else PR
        v = b2 * v + (1 - b2) * g**2
        adam = g / (np.sqrt(v / (1 - b2**t)) + eps)
        if t >= start:
            s = PL @ g @ PR
            d = s * np.linalg.norm(adam) / np.linalg.norm(s)
        else:
            d = adam
        M = b1 * M + (1 - b1) * d
        theta = theta * (1 - lr * weight_decay) - lr * M / (1 - b1**t)
    return theta


def _adamw_vector(theta, grads, *, lr, betas, eps, weight_decay, **_):
    b1, b2 = betas
    theta, m, v = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        theta = theta * (1 - lr * weight_decay) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return theta


@pytest.mark.parametrize(("freq", "start", "exponent", "shampoo_beta"),
                         [(1, 1, 0.25, 0.9), (3, 2, 0.5, 1.0), (2, 4, 0.25, 0.99)])
def test_matches_numpy_reference(freq: int, start: int, exponent: float, shampoo_beta: float) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(8)
    opt = Shampoo(params, precondition_frequency=freq, start_preconditioning_step=start, exponent=exponent,
                  shampoo_beta=shampoo_beta, **HP)
    _run(opt, params, grads)
    for i, (p, th) in enumerate(zip(params, theta0)):
        gs = [step[i] for step in grads]
        if th.ndim == 2:
            want = _shampoo_matrix(th, gs, freq=freq, start=start, exponent=exponent, shampoo_beta=shampoo_beta,
                                   **HP)
        else:
            want = _adamw_vector(th, gs, **HP)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"param {SHAPES[i]}")


def test_inverse_root_matches_eigh_in_float64() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 5, 3))
    f = a @ a.transpose(0, 2, 1)  # rank 3 of 5: the damping decides the null space
    got = inverse_root(torch.from_numpy(f).float(), 0.25, 1e-3).double().numpy()
    for k in range(2):
        np.testing.assert_allclose(got[k], _root(f[k], 0.25, 1e-3), rtol=2e-3, atol=2e-4)
    assert torch.isfinite(inverse_root(torch.zeros(1, 3, 3), 0.25, 1e-6)).all()


def test_grafted_step_has_the_norm_of_adams_step() -> None:
    params = _params([(4, 6)])
    opt = Shampoo(params, lr=0.1, betas=(0.0, 0.9), precondition_frequency=1, start_preconditioning_step=1)
    v = np.zeros((4, 6))
    for t, gs in enumerate(_grads(4, [(4, 6)]), start=1):
        before = params[0].detach().clone()
        _run(opt, params, [gs])
        v = 0.9 * v + 0.1 * gs[0] ** 2
        adam_norm = np.linalg.norm(gs[0] / (np.sqrt(v / (1 - 0.9**t)) + 1e-8))
        step_norm = float((params[0].detach() - before).norm())
        assert step_norm == pytest.approx(0.1 * adam_norm, rel=1e-9)


def test_side_above_max_precond_dim_is_not_preconditioned() -> None:
    emb = nn.Embedding(3000, 8)  # vocabulary side above the default max_precond_dim 2048
    opt = Shampoo(emb.parameters())
    emb(torch.tensor([[1, 5, 7]])).square().sum().backward()
    opt.step()
    st = opt.state[emb.weight]
    assert "GG_L" not in st and st["GG_R"].shape == (8, 8) and st["P_R"].shape == (8, 8)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.hidden = nn.Linear(4, 4)
        self.hidden2 = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.embed(tokens).transpose(1, 2)).transpose(1, 2)
        return self.head(torch.tanh(self.hidden2(torch.tanh(self.hidden(x)))))


def _train(model: nn.Module, opt: Shampoo, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, 10, (2, 5), generator=g)
        model(tokens).float().square().mean().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_continues_identically(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    ref = _Net().to(dtype)
    copy = _Net().to(dtype)
    copy.load_state_dict(ref.state_dict())
    opt = Shampoo(ref.parameters(), precondition_frequency=3)
    _train(ref, opt, 7, seed=0)
    buf = io.BytesIO()
    torch.save({"model": ref.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    _train(ref, opt, 5, seed=1)
    copy.load_state_dict(saved["model"])
    fresh = Shampoo(copy.parameters(), precondition_frequency=3)
    fresh.load_state_dict(saved["opt"])
    assert fresh.state[copy.hidden.weight]["P_L"].dtype == torch.float32
    _train(copy, fresh, 5, seed=1)
    for a, b in zip(ref.parameters(), copy.parameters()):
        assert torch.equal(a, b)


def test_bfloat16_parameters_train() -> None:
    torch.manual_seed(0)
    model = _Net().to(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, Shampoo(model.parameters(), precondition_frequency=2), 5, seed=0)
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all() and not torch.equal(p, b)


def test_submission_spec_and_bad_hyperparameters() -> None:
    info = TrialInfo(workload="t", size="tiny", step_hint=100, max_steps=100, batch_size=2, device="cpu", seed=0)
    updater = shampoo.create(_Net(), dict(DEFAULTS), info)
    assert isinstance(updater.optimizer, Shampoo) and updater.param_groups[0]["exponent"] == 0.25
    with pytest.raises(ValueError):
        Shampoo(_Net().parameters(), matrix_eps=0.0)
