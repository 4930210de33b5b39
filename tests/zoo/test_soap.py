"""SOAP against a dense numpy float64 transcription of the paper's equations (Vyas et al. 2024, Algorithm 3)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.soap import DEFAULTS, SOAP, soap

# A square matrix (both sides preconditioned), a wide one whose 6 columns exceed max_precond_dim=4 (left side only),
# and a bias (AdamW). Square / wide-with-few-rows keep every factor full rank from the first gradient on, so the
# eigenbases are unique up to signs, which the update does not depend on.
SHAPES = [(4, 4), (3, 6), (5,)]
HP = dict(lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.8, eps=1e-8, weight_decay=0.1, max_precond_dim=4)


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


def _eig_desc(a: np.ndarray) -> np.ndarray:
    return np.linalg.eigh(a)[1][:, ::-1]


def _soap_matrix(theta, grads, *, lr, betas, shampoo_beta, eps, weight_decay, max_precond_dim, freq, exact):
    """SOAP on one matrix in float64: Q_L / Q_R are None (identity) for a side above max_precond_dim."""
    b1, b2 = betas
    theta = theta.copy()
    m_dim, n_dim = theta.shape
    g0 = grads[0]
    L = (1 - shampoo_beta) * g0 @ g0.T if m_dim <= max_precond_dim else None
    R = (1 - shampoo_beta) * g0.T @ g0 if n_dim <= max_precond_dim else None
    QL = _eig_desc(L) if L is not None else np.eye(m_dim)
    QR = _eig_desc(R) if R is not None else np.eye(n_dim)
    M = np.zeros_like(theta)
    V = np.zeros_like(theta)
    for t, g in enumerate(grads[1:], start=1):
        gr = QL.T @ g @ QR
        M = b1 * M + (1 - b1) * gr
        V = b2 * V + (1 - b2) * gr**2
        direction = (M / (1 - b1**t)) / (np.sqrt(V / (1 - b2**t)) + eps)
        theta = theta * (1 - lr * weight_decay) - lr * QL @ direction @ QR.T
        if L is not None:
            L = shampoo_beta * L + (1 - shampoo_beta) * g @ g.T
        if R is not None:
            R = shampoo_beta * R + (1 - shampoo_beta) * g.T @ g
        if t % freq == 0:
            m_orig = QL @ M @ QR.T
            if L is not None:
                order = np.argsort(-np.diag(QL.T @ L @ QL))
                V = V[order, :]
                QL = _eig_desc(L) if exact else np.linalg.qr(L @ QL[:, order])[0]
            if R is not None:
                order = np.argsort(-np.diag(QR.T @ R @ QR))
                V = V[:, order]
                QR = _eig_desc(R) if exact else np.linalg.qr(R @ QR[:, order])[0]
            M = QL.T @ m_orig @ QR
    return theta


def _adamw_vector(theta, grads, *, lr, betas, eps, weight_decay, **_):
    b1, b2 = betas
    theta, m, v = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        theta = theta * (1 - lr * weight_decay) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return theta


@pytest.mark.parametrize(("freq", "refresh"), [(1, "eigh"), (2, "eigh"), (1, "qr"), (3, "qr")])
def test_matches_numpy_reference(freq: int, refresh: str) -> None:
    params = _params()
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(7)
    _run(SOAP(params, precondition_frequency=freq, refresh=refresh, **HP), params, grads)
    for i, (p, th) in enumerate(zip(params, theta0)):
        gs = [step[i] for step in grads]
        if th.ndim == 2:
            want = _soap_matrix(th, gs, freq=freq, exact=refresh == "eigh", **HP)
        else:
            want = _adamw_vector(th, gs, **HP)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"param {SHAPES[i]}")


def test_float32_state_tracks_float64_reference() -> None:
    params = _params(dtype=torch.float32)
    theta0 = [p.detach().double().numpy() for p in params]
    grads = _grads(6)
    _run(SOAP(params, precondition_frequency=2, **HP), params, grads)
    want = _soap_matrix(theta0[0], [g[0] for g in grads], freq=2, exact=False, **HP)
    np.testing.assert_allclose(params[0].detach().double().numpy(), want, rtol=1e-4, atol=1e-5)


def test_first_step_only_initialises_the_factors() -> None:
    params = _params()
    before = [p.detach().clone() for p in params]
    opt = SOAP(params, **HP)
    _run(opt, params, _grads(1))
    assert torch.equal(params[0], before[0]) and torch.equal(params[1], before[1])  # matrices: no update
    assert not torch.equal(params[2], before[2])  # the bias takes an AdamW step at once
    st = opt.state[params[0]]
    assert st["step"] == 0 and set(st) >= {"GG_L", "GG_R", "Q_L", "Q_R"}
    q = st["Q_L"]
    torch.testing.assert_close(q.T @ q, torch.eye(4, dtype=q.dtype))
    _run(opt, params, _grads(1, seed=2))
    assert not torch.equal(params[0], before[0])


def test_identity_basis_above_max_precond_dim() -> None:
    # (3, 6): rows preconditioned, columns identity. (6, 6): both above -> plain AdamW from step 1.
    params = _params([(3, 6), (6, 6)])
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(4, [(3, 6), (6, 6)])
    opt = SOAP(params, **HP)
    _run(opt, params, grads)
    assert set(opt.state[params[0]]) >= {"Q_L", "GG_L"} and "Q_R" not in opt.state[params[0]]
    assert "Q_L" not in opt.state[params[1]] and "Q_R" not in opt.state[params[1]]
    want = _adamw_vector(theta0[1], [g[1] for g in grads], **HP)
    np.testing.assert_allclose(params[1].detach().numpy(), want, rtol=1e-10)


def test_embedding_keeps_vocabulary_side_in_identity_basis() -> None:
    emb = nn.Embedding(3000, 8)  # 3000 > the default max_precond_dim 2048
    opt = SOAP(emb.parameters())
    for _ in range(2):
        emb(torch.tensor([[1, 5, 7]])).square().sum().backward()
        opt.step()
    st = opt.state[emb.weight]
    assert "Q_L" not in st and st["Q_R"].shape == (8, 8)


def test_conv_kernel_is_the_out_by_fan_in_matrix() -> None:
    conv, lin = _params([(4, 2, 1, 2)]), _params([(4, 4)])
    with torch.no_grad():
        conv[0].copy_(lin[0].reshape(4, 2, 1, 2))
    grads = _grads(5, [(4, 4)])
    _run(SOAP(conv, precondition_frequency=2, **HP), conv, [[g[0].reshape(4, 2, 1, 2)] for g in grads])
    _run(SOAP(lin, precondition_frequency=2, **HP), lin, grads)
    assert torch.equal(conv[0].detach().reshape(4, 4), lin[0].detach())


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.hidden = nn.Linear(4, 4)  # two equal-shaped matrices: one stacked bucket
        self.hidden2 = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.embed(tokens).transpose(1, 2)).transpose(1, 2)
        return self.head(torch.tanh(self.hidden2(torch.tanh(self.hidden(x)))))


def _train(model: nn.Module, opt: SOAP, steps: int, seed: int) -> None:
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
    opt = SOAP(ref.parameters(), precondition_frequency=3)
    _train(ref, opt, 7, seed=0)  # init + 6 Adam steps, two refreshes
    buf = io.BytesIO()
    torch.save({"model": ref.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    _train(ref, opt, 5, seed=1)
    copy.load_state_dict(saved["model"])
    fresh = SOAP(copy.parameters(), precondition_frequency=3)
    fresh.load_state_dict(saved["opt"])
    assert fresh.state[copy.hidden.weight]["exp_avg"].dtype == torch.float32  # not cast to the parameter dtype
    _train(copy, fresh, 5, seed=1)
    for a, b in zip(ref.parameters(), copy.parameters()):
        assert torch.equal(a, b)


def test_bfloat16_parameters_train_with_float32_state() -> None:
    torch.manual_seed(0)
    model = _Net().to(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    opt = SOAP(model.parameters(), precondition_frequency=2)
    _train(model, opt, 5, seed=0)
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all() and not torch.equal(p, b)
    assert opt.state[model.hidden.weight]["Q_L"].dtype == torch.float32


def test_submission_spec_builds_a_scheduled_soap() -> None:
    model = _Net()
    info = TrialInfo(workload="t", size="tiny", step_hint=100, max_steps=100, batch_size=2, device="cpu", seed=0)
    updater = soap.create(model, dict(DEFAULTS), info)
    assert isinstance(updater.optimizer, SOAP)
    assert updater.param_groups[0]["max_precond_dim"] == DEFAULTS["max_precond_dim"]
    with pytest.raises(ValueError):
        SOAP(model.parameters(), refresh="svd")


def test_one_sided_rotates_only_the_smaller_side() -> None:
    # One-sided on a (4, 6) matrix is two-sided SOAP with the 6-side above max_precond_dim.
    a, b = _params([(4, 6)]), _params([(4, 6)])
    grads = _grads(5, [(4, 6)])
    hp = {**HP, "max_precond_dim": 8}
    opt = SOAP(a, precondition_frequency=2, one_sided=True, **hp)
    _run(opt, a, grads)
    _run(SOAP(b, precondition_frequency=2, **{**hp, "max_precond_dim": 5}), b, grads)
    assert "Q_R" not in opt.state[a[0]] and torch.equal(a[0], b[0])
    tall = _params([(6, 3)])
    opt = SOAP(tall, one_sided=True, **hp)
    _run(opt, tall, _grads(2, [(6, 3)]))
    assert "Q_L" not in opt.state[tall[0]] and opt.state[tall[0]]["Q_R"].shape == (3, 3)


def test_parameters_that_start_later_get_their_own_bias_correction() -> None:
    """Two same-shape matrices (one bucket) and two vectors; the second of each pair gets no gradient for its first
    two steps, so within a bucket the Adam step counts differ. Each parameter must follow its own trajectory, with
    the bias corrections of *its* step count (a bucket sharing the first parameter's t, or the vectors' AdamW step
    sharing one t, fails)."""
    shapes = [(4, 4), (4, 4), (5,), (5,)]
    params = _params(shapes)
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(7, shapes, seed=3)
    late = {1, 3}
    opt = SOAP(params, precondition_frequency=2, refresh="eigh", **HP)
    for k, gs in enumerate(grads):
        for i, (p, g) in enumerate(zip(params, gs)):
            p.grad = None if (i in late and k < 2) else torch.from_numpy(g)
        opt.step()
    for i, (p, th) in enumerate(zip(params, theta0)):
        gs = [step[i] for step in (grads[2:] if i in late else grads)]
        if th.ndim == 2:
            want = _soap_matrix(th, gs, freq=2, exact=True, **HP)
        else:
            want = _adamw_vector(th, gs, **HP)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"param {i} {shapes[i]}")


def test_first_step_decomposes_once_per_factor_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The initialising eigendecompositions are batched across buckets by factor size: two (4, 4) matrices, a (3, 3)
    and a (4, 9) one (its 9 columns above max_precond_dim) have five factors of size 4 and two of size 3: two eigh
    calls (on CUDA, two host reads of the solver's status instead of five), and each matrix still follows its
    float64 reference (full-rank factors from the first gradient on, as SHAPES)."""
    import optbench_submissions.soap as soap_module

    shapes = [(4, 4), (3, 3), (4, 9), (4, 4)]
    params = _params(shapes, seed=4)
    theta0 = [p.detach().numpy().copy() for p in params]
    batches = []
    eigh = soap_module.eigh_descending

    def counted(a: torch.Tensor) -> torch.Tensor:
        batches.append(tuple(a.shape))
        return eigh(a)

    monkeypatch.setattr(soap_module, "eigh_descending", counted)
    grads = _grads(5, shapes, seed=5)
    _run(SOAP(params, precondition_frequency=2, **HP), params, grads)
    assert sorted(batches) == [(2, 3, 3), (5, 4, 4)]
    for i, (p, th) in enumerate(zip(params, theta0)):
        want = _soap_matrix(th, [g[i] for g in grads], freq=2, exact=False, **HP)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"param {i}")
