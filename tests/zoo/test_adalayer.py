"""Adalayer against a numpy float64 transcription of Zhao et al. 2024 (Sec. 5), and its block grouping rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from optbench.api import TrialInfo
from optbench_submissions.adalayer import DEFAULTS, Adalayer, adalayer, adalayer_param_groups, per_row_parameters


class TinyLM(nn.Module):
    """Embedding -> LayerNorm -> hidden Linear -> conv-free head; optionally tied head/embedding."""

    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.norm = nn.LayerNorm(3)
        self.hidden = nn.Linear(3, 3)
        self.head = nn.Linear(3, 5, bias=not tied)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.norm(self.emb(idx)))))


def _model(dtype: torch.dtype = torch.float64, tied: bool = False) -> TinyLM:
    torch.manual_seed(0)
    return TinyLM(tied).to(dtype)


def _grads(model: nn.Module, steps: int, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    # Different scales per row, so per-row and per-tensor blocks give different updates.
    return [[rng.standard_normal(p.shape) * np.exp(rng.standard_normal(p.shape[:1] + (1,) * (p.dim() - 1)))
             for p in _ordered(model)] for _ in range(steps)]


def _ordered(model: nn.Module) -> list[torch.Tensor]:
    return [p for g in adalayer_param_groups(model) for p in g["params"]]


def _run(opt: torch.optim.Optimizer, model: nn.Module, grads: list[list[np.ndarray]]) -> None:
    for gs in grads:
        for p, g in zip(_ordered(model), gs):
            p.grad = torch.from_numpy(g).to(p.dtype)
        opt.step()


def _reference(theta, grads, per_row, *, lr, b1, b2, eps, wd):
    """Adam with v shared over each block: a row (per_row; single elements for vectors) or the whole tensor."""
    theta = [x.copy() for x in theta]
    m = [np.zeros_like(x) for x in theta]
    v = [None] * len(theta)
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            if per_row[i] and g.ndim >= 2:
                msq = np.array([np.mean(g[r] ** 2) for r in range(g.shape[0])]).reshape((-1,) + (1,) * (g.ndim - 1))
            elif per_row[i]:
                msq = g**2
            else:
                msq = np.mean(g**2)
            v[i] = (1 - b2) * msq if v[i] is None else b2 * v[i] + (1 - b2) * msq
            m[i] = b1 * m[i] + (1 - b1) * g
            step = (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps)
            theta[i] = theta[i] * (1 - lr * wd) - lr * step
    return theta, v


def test_grouping_rule() -> None:
    model = _model()
    rows = per_row_parameters(model)
    assert rows == {id(model.emb.weight), id(model.head.weight), id(model.head.bias)}
    groups = adalayer_param_groups(model)
    assert [g["per_row"] for g in groups] == [False, True]
    assert {id(p) for p in groups[1]["params"]} == rows
    assert len(groups[0]["params"]) == 4  # norm weight/bias, hidden weight/bias


def test_tied_head_is_listed_once_with_row_blocks() -> None:
    model = _model(tied=True)
    groups = adalayer_param_groups(model)
    per_row = [p for g in groups if g["per_row"] for p in g["params"]]
    assert len(per_row) == 1 and per_row[0] is model.emb.weight


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_matches_reference_and_block_scalars_are_means_of_g2(wd: float) -> None:
    model = _model()
    params = _ordered(model)
    per_row = [g["per_row"] for g in adalayer_param_groups(model) for _ in g["params"]]
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(model, 4)
    opt = Adalayer(adalayer_param_groups(model), lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd)
    _run(opt, model, grads)
    ref, v_ref = _reference(theta0, grads, per_row, lr=0.01, b1=0.9, b2=0.99, eps=1e-8, wd=wd)
    for p, r, v in zip(params, ref, v_ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.state[p]["exp_avg_sq"].numpy(), v, rtol=1e-12)
    assert opt.state[model.hidden.weight]["exp_avg_sq"].shape == ()  # one scalar for the layer
    assert opt.state[model.head.weight]["exp_avg_sq"].shape == (5, 1)  # one per output row
    assert opt.state[model.emb.weight]["exp_avg_sq"].shape == (5, 1)  # one per token


def test_first_step_is_normalised_momentum_per_block() -> None:
    """Hand-computed: step 1 gives -lr * g / sqrt(mean(g^2)) for a whole-tensor block."""
    p = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    p.grad = torch.tensor([[1.0, -1.0], [3.0, 1.0]], dtype=torch.float64)  # mean(g^2) = 3
    Adalayer([p], lr=0.1, eps=0.0).step()
    torch.testing.assert_close(p.detach(), -0.1 * p.grad / 3**0.5)


def test_state_dict_round_trip_continues_identically() -> None:
    a = _model(torch.float32)
    opt_a = Adalayer(adalayer_param_groups(a), lr=0.01, weight_decay=0.1)
    grads = _grads(a, 6)
    _run(opt_a, a, grads[:3])
    buf = io.BytesIO()
    torch.save({"opt": opt_a.state_dict(), "model": a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = _model(torch.float32)
    b.load_state_dict(saved["model"])
    opt_b = Adalayer(adalayer_param_groups(b), lr=0.01, weight_decay=0.1)
    opt_b.load_state_dict(saved["opt"])
    _run(opt_a, a, grads[3:])
    _run(opt_b, b, grads[3:])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_bfloat16_params_keep_float32_state() -> None:
    model = _model(torch.bfloat16)
    ref = _model(torch.float32)
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    grads = _grads(model, 3)
    opt = Adalayer(adalayer_param_groups(model), lr=0.01)
    _run(opt, model, grads)
    for p in model.parameters():
        assert p.dtype == torch.bfloat16
        assert opt.state[p]["exp_avg"].dtype == torch.float32 and opt.state[p]["exp_avg_sq"].dtype == torch.float32
    _run(Adalayer(adalayer_param_groups(ref), lr=0.01), ref, grads)
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.float(), r.detach(), rtol=2e-2, atol=2e-2)


def test_submission_builds_and_search_space_keys_are_hyperparameters() -> None:
    model = _model(torch.float32)
    info = TrialInfo(workload="lm", size="tiny", step_hint=100, max_steps=200, batch_size=8, device="cpu", seed=0)
    opt = adalayer.create(model, dict(DEFAULTS), info)
    model(torch.randint(0, 5, (8,))).pow(2).mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert set(adalayer.search_space()) <= set(DEFAULTS)
