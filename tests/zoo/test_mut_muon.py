"""Muon's factory: every hyperparameter reaches the right parameter group (the zoo tests run it at its defaults, so
swapped or dropped keywords survive there). Kills mutmut survivors of submissions/muon.py (docs/TESTING.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optbench_submissions import muon as muon_module
from optbench_submissions.muon import Muon, newton_schulz5, route
from tests.zoo.helpers import short_info
from tests.zoo.test_muon import _ns_numpy  # the float64 reference iteration, kept in one place

HP = {"lr": 0.03, "momentum": 0.8, "nesterov": False, "ns_steps": 3, "adam_lr": 0.004, "adam_beta1": 0.7,
      "adam_beta2": 0.85, "adam_eps": 1e-7, "weight_decay": 0.25, "ns_dtype": "float32"}


@pytest.mark.parametrize("nesterov", [False, True])
def test_make_maps_every_hyperparameter(nesterov):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Linear(6, 2))
    groups = muon_module._make(model, HP | {"nesterov": nesterov}, short_info()).param_groups
    matrices = next(g for g in groups if g["use_muon"])
    others = next(g for g in groups if not g["use_muon"])
    assert (matrices["lr"], matrices["momentum"], matrices["nesterov"], matrices["ns_steps"]) == (0.03, 0.8, nesterov, 3)
    assert matrices["weight_decay"] == 0.25 and matrices["ns_dtype"] == "float32"
    assert (others["lr"], others["betas"], others["eps"]) == (0.004, (0.7, 0.85), 1e-7)


# ---- Survivors of the full run (docs/TESTING.md, "submissions/muon.py survivors (full run)") ----


def _ns64(u: np.ndarray, steps: int = 5) -> torch.Tensor:
    return torch.from_numpy(_ns_numpy(u, steps))


def test_newton_schulz_default_is_five_steps() -> None:
    u = np.random.default_rng(0).standard_normal((4, 7))
    got = newton_schulz5(torch.from_numpy(u)[None].float())[0].double()
    torch.testing.assert_close(got, _ns64(u, 5), rtol=1e-4, atol=1e-4)


def test_newton_schulz_normalises_each_matrix_of_a_batch_on_its_own() -> None:
    # Two matrices 1000x apart in scale: a norm over the whole batch (or without keepdim) would mis-scale them.
    rng = np.random.default_rng(1)
    us = [rng.standard_normal((3, 5)) * 1000.0, rng.standard_normal((3, 5))]
    got = newton_schulz5(torch.from_numpy(np.stack(us)).float(), 5).double()
    for i, u in enumerate(us):
        torch.testing.assert_close(got[i], _ns64(u), rtol=1e-4, atol=1e-4)


def test_newton_schulz_epsilon_is_added_to_the_norm() -> None:
    # ||U||_F = 2e-7: + 1e-7 scales X to norm 2/3 (converges); - 1e-7 would scale it to 2 and blow up.
    u = np.random.default_rng(2).standard_normal((3, 4))
    u *= 2e-7 / np.linalg.norm(u)
    got = newton_schulz5(torch.from_numpy(u)[None].float(), 5)[0].double()
    torch.testing.assert_close(got, _ns64(u), rtol=1e-3, atol=1e-4)


class _BmmShapes(torch.overrides.TorchFunctionMode):
    """Records the output shapes of torch.bmm (observes the real kernels; changes nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.bmm:
            self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("rows, cols", [(9, 3), (3, 9)])
def test_newton_schulz_gram_matrix_is_the_small_one(rows, cols) -> None:
    # The cost claim of the module docstring: X X^T is (r, r) with r = min(m, n), tall matrices transposed first.
    u = np.random.default_rng(3).standard_normal((rows, cols))
    with _BmmShapes() as seen:
        got = newton_schulz5(torch.from_numpy(u)[None].float(), 2)
    r = min(rows, cols)
    assert seen.shapes and set(seen.shapes) == {(1, r, r)}
    assert got.shape == (1, rows, cols)
    torch.testing.assert_close(got[0].double(), _ns64(u, 2), rtol=1e-4, atol=1e-4)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_head_sharing_its_weight_with_a_hidden_layer_stays_adamw() -> None:
    inner, head = nn.Linear(4, 4), nn.Linear(4, 4)
    head.weight = inner.weight
    first = nn.Linear(3, 4)
    muon_params, adam_params = route(nn.Sequential(first, inner, nn.ReLU(), head))
    assert _ids(muon_params) == {id(first.weight)}
    assert id(inner.weight) in _ids(adam_params)


def test_hidden_linear_sharing_an_embedding_weight_stays_adamw() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(6, 4)
            self.tied = nn.Linear(4, 6, bias=False)
            self.tied.weight = self.emb.weight  # hidden Linear reading off the embedding table
            self.mid = nn.Linear(6, 5)
            self.head = nn.Linear(5, 3)

    net = Net()
    muon_params, adam_params = route(net)
    assert _ids(muon_params) == {id(net.mid.weight)}
    assert id(net.emb.weight) in _ids(adam_params)


def _mat() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(3, 2))]


@pytest.mark.parametrize("bad", [dict(lr=-1e-3), dict(adam_lr=-1e-3), dict(weight_decay=-0.1), dict(momentum=1.0),
                                 dict(momentum=1.5), dict(momentum=-0.1), dict(ns_steps=-1)])
def test_each_invalid_hyperparameter_alone_is_rejected_with_a_message(bad) -> None:
    with pytest.raises(ValueError, match="invalid Muon hyperparameters"):
        Muon(_mat(), [nn.Parameter(torch.zeros(2))], **bad)


@pytest.mark.parametrize("edge", [dict(lr=0.0), dict(adam_lr=0.0), dict(weight_decay=0.0), dict(momentum=0.0),
                                  dict(ns_steps=0)])
def test_boundary_hyperparameters_are_accepted(edge) -> None:
    Muon(_mat(), [nn.Parameter(torch.zeros(2))], **edge)


def test_bad_ns_dtype_message_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"ns_dtype must be 'auto' or one of \['bfloat16', 'float32'\], got 'fp8'"):
        Muon(_mat(), [], ns_dtype="fp8")


def test_constructor_defaults_are_the_documented_ones() -> None:
    muon_group, adam_group = Muon(_mat(), [nn.Parameter(torch.zeros(2))]).param_groups
    assert (muon_group["lr"], muon_group["momentum"], muon_group["nesterov"], muon_group["ns_steps"]) == (
        0.02, 0.95, True, 5)
    assert (adam_group["lr"], adam_group["betas"], adam_group["eps"]) == (1e-2, (0.9, 0.95), 1e-10)
    assert muon_group["weight_decay"] == adam_group["weight_decay"] == 0.0
    assert muon_group["ns_dtype"] == "auto"


def test_plain_momentum_uses_the_buffer_not_the_nesterov_blend() -> None:
    # Two steps with different gradients (one step cannot tell: both updates are multiples of g, and NS normalises).
    mu, lr = 0.9, 0.1
    rng = np.random.default_rng(4)
    theta = rng.standard_normal((3, 5))
    grads = [rng.standard_normal((3, 5)) for _ in range(2)]
    p = nn.Parameter(torch.from_numpy(theta).float())
    opt = Muon([p], [], lr=lr, momentum=mu, nesterov=False, ns_dtype="float32")
    buf, want = np.zeros_like(theta), theta.copy()
    for g in grads:
        p.grad = torch.from_numpy(g).float()
        opt.step()
        buf = mu * buf + (1 - mu) * g
        want = want - lr * _ns_numpy(buf, 5)  # 3 x 5 is wide: lr scale 1
    torch.testing.assert_close(p.detach().double(), torch.from_numpy(want), rtol=1e-5, atol=1e-5)


def test_momentum_buffer_is_contiguous_for_a_channels_last_kernel() -> None:
    # The buffer is reshaped to (out, in*kh*kw) every step: contiguous keeps that a view, not a copy.
    w = nn.Parameter(torch.randn(4, 3, 2, 2).to(memory_format=torch.channels_last))
    opt = Muon([w], [], ns_dtype="float32")
    w.grad = torch.randn(4, 3, 2, 2)
    opt.step()
    assert opt.state[w]["momentum_buffer"].is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the 'auto' rule differs only on CUDA")
def test_auto_is_bfloat16_on_cuda() -> None:
    def run(ns_dtype: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(5)
        p = nn.Parameter(torch.randn(6, 4, generator=g).cuda())
        p.grad = torch.randn(6, 4, generator=g).cuda()
        Muon([p], [], ns_dtype=ns_dtype).step()
        return p.detach().cpu()

    torch.testing.assert_close(run("auto"), run("bfloat16"), rtol=0, atol=0)
    assert not torch.equal(run("auto"), run("float32"))
