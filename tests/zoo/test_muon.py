"""Muon: Newton-Schulz output, one update against a numpy float64 hand computation, routing, state, dtypes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.muon import DEFAULTS, Muon, muon, newton_schulz5, route

# A wide matrix, a tall one (lr scale sqrt(6/3)), a conv kernel (flattened to 4 x 4) for Muon; a bias for AdamW.
MUON_SHAPES = [(4, 6), (6, 3), (4, 2, 1, 2)]
HP = dict(lr=0.05, momentum=0.9, ns_steps=5, adam_lr=0.01, adam_betas=(0.9, 0.95), adam_eps=1e-10,
          weight_decay=0.1)


def _spectrum_matrix(rows: int, cols: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    u = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64)).Q
    s = torch.logspace(0, -np.log10(cond), k, dtype=torch.float64)
    return (u * s) @ v.T


@pytest.mark.parametrize(("rows", "cols", "cond"), [(16, 64, 3.0), (64, 16, 3.0), (20, 12, 100.0), (8, 8, 30.0)])
def test_newton_schulz_singular_values_in_band_with_input_singular_vectors(rows: int, cols: int, cond: float) -> None:
    x = _spectrum_matrix(rows, cols, cond, seed=rows + cols)
    out = newton_schulz5(x[None].float(), 5, torch.float32)[0].double().numpy()
    u, _, vt = np.linalg.svd(x.numpy(), full_matrices=False)
    core = u.T @ out @ vt.T  # diagonal if the output shares the input's singular vectors
    diag = np.diag(core)
    assert np.all((diag > 0.6) & (diag < 1.25)), diag
    assert np.abs(core - np.diag(diag)).max() < 1e-4
    sv = np.linalg.svd(out, compute_uv=False)
    assert sv.min() > 0.6 and sv.max() < 1.25


def _ns_numpy(u: np.ndarray, steps: int) -> np.ndarray:
    """The quintic iteration of Jordan et al. 2024 in float64, written out."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = u.T if u.shape[0] > u.shape[1] else u
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if u.shape[0] > u.shape[1] else x


def _muon_reference(theta, grads, *, lr, momentum, ns_steps, weight_decay, **_):
    theta = theta.copy()
    shape = theta.shape
    buf = np.zeros_like(theta)
    for g in grads:
        buf = momentum * buf + (1 - momentum) * g
        u = (momentum * buf + (1 - momentum) * g).reshape(shape[0], -1)  # Nesterov
        o = _ns_numpy(u, ns_steps).reshape(shape)
        scale = max(1.0, u.shape[0] / u.shape[1]) ** 0.5
        theta = theta * (1 - lr * weight_decay) - lr * scale * o
    return theta


def _adamw_reference(theta, grads, *, adam_lr, adam_betas, adam_eps, weight_decay, **_):
    (b1, b2), lr = adam_betas, adam_lr
    theta, m, v = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        theta = theta * (1 - lr * weight_decay) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + adam_eps)
    return theta


def test_updates_match_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    mats = [nn.Parameter(torch.randn(s, generator=gen)) for s in MUON_SHAPES]
    bias = nn.Parameter(torch.randn(5, generator=gen))
    theta0 = [p.detach().double().numpy() for p in (*mats, bias)]
    rng = np.random.default_rng(1)
    grads = [[rng.standard_normal(p.shape) for p in (*mats, bias)] for _ in range(3)]
    opt = Muon(mats, [bias], **HP)
    for gs in grads:
        for p, g in zip((*mats, bias), gs):
            p.grad = torch.from_numpy(g).float()
        opt.step()
    for i, p in enumerate(mats):
        want = _muon_reference(theta0[i], [g[i] for g in grads], **HP)
        np.testing.assert_allclose(p.detach().double().numpy(), want, rtol=1e-5, atol=1e-5, err_msg=str(p.shape))
    want = _adamw_reference(theta0[3], [g[3] for g in grads], **HP)
    np.testing.assert_allclose(bias.detach().double().numpy(), want, rtol=1e-5, atol=1e-6)


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_can_be_forced() -> None:
    def run(ns_dtype: str) -> torch.Tensor:
        p = nn.Parameter(_spectrum_matrix(6, 4, 5.0, seed=3).float())
        p.grad = _spectrum_matrix(6, 4, 5.0, seed=4).float()
        Muon([p], [], ns_dtype=ns_dtype).step()
        return p.detach()

    assert torch.equal(run("auto"), run("float32"))
    forced = run("bfloat16")
    assert not torch.equal(forced, run("float32")) and torch.allclose(forced, run("float32"), atol=0.02 * 0.05)
    with pytest.raises(ValueError):
        Muon([nn.Parameter(torch.zeros(2, 2))], [], ns_dtype="fp8")


class _Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.hidden = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.embed(tokens).transpose(1, 2)).transpose(1, 2)
        return self.head(self.norm(torch.tanh(self.hidden(x))))


class _TiedLM(nn.Module):
    """A GPT-like stack whose logits are read off the embedding (no head Linear), plus a free position table."""

    def __init__(self, untied: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 8)
        self.pos = nn.Parameter(torch.zeros(4, 8))
        self.fc = nn.Linear(8, 16, bias=False)
        self.proj = nn.Linear(16, 8, bias=False)
        self.lm_head = nn.Linear(8, 32, bias=False) if untied else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        x = x + self.proj(F.gelu(self.fc(x)))
        return self.lm_head(x) if self.lm_head is not None else F.linear(x, self.embed.weight)


def _names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_routing_embedding_head_and_vectors_go_to_adamw() -> None:
    zoo = _Zoo()
    m, a = route(zoo)
    assert _names(zoo, m) == {"conv.weight", "hidden.weight"}
    assert _names(zoo, a) == {"embed.weight", "conv.bias", "hidden.bias", "norm.weight", "norm.bias", "head.weight"}
    tied = _TiedLM()
    m, a = route(tied)
    assert _names(tied, m) == {"fc.weight", "proj.weight"}  # proj is the last Linear but feeds the residual stream
    assert _names(tied, a) == {"embed.weight", "pos"}
    untied = _TiedLM(untied=True)
    assert _names(untied, route(untied)[1]) == {"embed.weight", "pos", "lm_head.weight"}
    linreg = nn.Linear(256, 1, bias=False)  # the linreg workload's model: its only matrix is the output head
    m, a = route(linreg)
    assert m == [] and len(a) == 1
    info = TrialInfo(workload="linreg", size="tiny", step_hint=10, max_steps=10, batch_size=2, device="cpu", seed=0)
    groups = muon.create(linreg, dict(DEFAULTS), info).param_groups
    assert [g["use_muon"] for g in groups] == [False] and groups[0]["lr"] == DEFAULTS["adam_lr"]


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        model(torch.randint(0, 16, (2, 5), generator=g)).float().square().mean().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_continues_identically(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    ref, copy = _Zoo().to(dtype), _Zoo().to(dtype)
    copy.load_state_dict(ref.state_dict())
    opt = Muon(*route(ref))
    _train(ref, opt, 6, seed=0)
    buf = io.BytesIO()
    torch.save({"model": ref.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    _train(ref, opt, 4, seed=1)
    copy.load_state_dict(saved["model"])
    fresh = Muon(*route(copy))
    fresh.load_state_dict(saved["opt"])
    assert fresh.state[copy.hidden.weight]["momentum_buffer"].dtype == torch.float32
    _train(copy, fresh, 4, seed=1)
    for a, b in zip(ref.parameters(), copy.parameters()):
        assert torch.equal(a, b)


def test_bfloat16_parameters_train() -> None:
    torch.manual_seed(0)
    model = _Zoo().to(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, Muon(*route(model)), 3, seed=0)
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all() and not torch.equal(p, b)
