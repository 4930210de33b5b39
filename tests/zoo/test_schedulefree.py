"""Schedule-Free AdamW: steps against a float64 numpy transcription of the paper's Algorithm 1, the x/y/z relations,
the exactness of the evaluation swap, state_dict round trips and bf16 parameters."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from optbench.api import Capability, TrialInfo
from optbench.errors import UsageError
from optbench_submissions.schedulefree import AdamWScheduleFree, schedulefree
from optbench_workloads.linreg import workload as linreg

# A separable quadratic f(w) = 0.5 * sum(D * (w - A)^2) over two tensors of different ranks.
SHAPES = [(3, 4), (5,)]
RNG = np.random.default_rng(0)
D = [RNG.uniform(0.5, 2.0, s) for s in SHAPES]
A = [RNG.normal(size=s) for s in SHAPES]
W0 = [RNG.normal(size=s) for s in SHAPES]


def _quad_grads(ws: list[np.ndarray]) -> list[np.ndarray]:
    return [d * (w - a) for d, w, a in zip(D, ws, A)]


def reference(steps: int, *, lr: float, betas: tuple[float, float], eps: float, wd: float, warmup: int, r: float,
              power: float) -> list[dict[str, list[np.ndarray]]]:
    """The paper's Algorithm 1 in float64, gradients taken at y; returns x, y, z after each step."""
    b1, b2 = betas
    x = [w.copy() for w in W0]
    z = [w.copy() for w in W0]
    v = [np.zeros_like(w) for w in W0]
    weights: list[float] = []
    gammas: list[float] = []
    out = []
    for t in range(1, steps + 1):
        y = [(1 - b1) * zi + b1 * xi for zi, xi in zip(z, x)]
        g = _quad_grads(y)
        gamma = lr * (min(1.0, t / warmup) if warmup else 1.0) * math.sqrt(1 - b2**t)
        gammas.append(gamma)
        weights.append(t**r * max(gammas) ** power)
        c = weights[-1] / sum(weights)
        for i in range(len(x)):
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            z[i] = z[i] - gamma * g[i] / (np.sqrt(v[i]) + eps) - gamma * wd * y[i]
            x[i] = (1 - c) * x[i] + c * z[i]
        y_next = [(1 - b1) * zi + b1 * xi for zi, xi in zip(z, x)]
        out.append({"x": [a.copy() for a in x], "z": [a.copy() for a in z], "y": y_next})
    return out


def _torch_params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(w, dtype=dtype)) for w in W0]


def _set_quad_grads(params: list[torch.nn.Parameter]) -> None:
    for p, d, a in zip(params, D, A):
        p.grad = (torch.tensor(d, dtype=p.dtype) * (p.detach() - torch.tensor(a, dtype=p.dtype))).to(p.dtype)


@pytest.mark.parametrize("kw", [
    dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, wd=0.0, warmup=0, r=0.0, power=2.0),
    dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, wd=0.1, warmup=2, r=1.0, power=2.0),
])
def test_three_steps_match_float64_algorithm(kw: dict) -> None:
    params = _torch_params()
    opt = AdamWScheduleFree(params, lr=kw["lr"], betas=kw["betas"], eps=kw["eps"], weight_decay=kw["wd"],
                            warmup_steps=kw["warmup"], r=kw["r"], weight_lr_power=kw["power"])
    ref = reference(3, **kw)
    for t in range(3):
        _set_quad_grads(params)  # gradient at what the parameters hold: y_t
        opt.step()
        for i, p in enumerate(params):
            st = opt.state[p]
            np.testing.assert_allclose(p.detach().numpy(), ref[t]["y"][i], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(st["x"].numpy(), ref[t]["x"][i], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(st["z"].numpy(), ref[t]["z"][i], rtol=1e-12, atol=1e-14)


def test_first_step_average_equals_z_and_y_interpolates() -> None:
    params = _torch_params()
    opt = AdamWScheduleFree(params, lr=0.1, betas=(0.9, 0.999))
    _set_quad_grads(params)
    opt.step()
    for p in params:
        st = opt.state[p]
        assert torch.equal(st["x"], st["z"])  # c_2 = w_1 / w_1 = 1: the average starts at z_2
        torch.testing.assert_close(p.detach(), 0.1 * st["z"] + 0.9 * st["x"], rtol=0, atol=1e-15)
    for _ in range(4):
        _set_quad_grads(params)
        opt.step()
    for p in params:
        st = opt.state[p]
        assert not torch.allclose(st["x"], st["z"])
        torch.testing.assert_close(p.detach(), 0.1 * st["z"] + 0.9 * st["x"], rtol=1e-14, atol=1e-14)


def test_eval_params_swaps_in_x_and_restores_y_bit_exactly() -> None:
    params = _torch_params(torch.float32)
    twin = _torch_params(torch.float32)
    opt = AdamWScheduleFree(params, lr=0.05, warmup_steps=2)
    opt_twin = AdamWScheduleFree(twin, lr=0.05, warmup_steps=2)
    with opt.eval_params():  # before any step: nothing to swap, nothing changes
        assert all(torch.equal(p, q) for p, q in zip(params, twin))
    for step in range(12):
        for o, ps in ((opt, params), (opt_twin, twin)):
            _set_quad_grads(ps)
            o.step()
        before = [p.detach().clone() for p in params]
        for _ in range(3):  # repeated evaluations must not drift
            with opt.eval_params():
                for p in params:
                    assert torch.equal(p.detach(), opt.state[p]["x"])
            assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    # the evaluated run and the never-evaluated twin are identical
    assert all(torch.equal(p, q) for p, q in zip(params, twin))


def test_eval_params_restores_after_an_exception() -> None:
    params = _torch_params(torch.float32)
    opt = AdamWScheduleFree(params, lr=0.05)
    for _ in range(3):
        _set_quad_grads(params)
        opt.step()
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError), opt.eval_params():
        raise RuntimeError("evaluation failed")
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def _info(step_hint: int = 1500) -> TrialInfo:
    return TrialInfo(workload="linreg", size="tiny", step_hint=step_hint, max_steps=3000, batch_size=32, device="cpu",
                     seed=0)


def _linreg_run(model: torch.nn.Module, opt, task, gen: torch.Generator, steps: int) -> None:
    for _ in range(steps):
        batch = task.next_batch(32, gen)
        opt.zero_grad()
        task.loss(model, batch).backward()
        opt.step()


def _reload(opt_state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(opt_state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_round_trip_continues_identically_on_linreg() -> None:
    task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"))
    hp = dict(schedulefree.defaults)
    gen = torch.Generator().manual_seed(0)
    model = task.init_model(gen)
    opt = schedulefree.create(model, hp, _info(step_hint=20))
    _linreg_run(model, opt, task, gen, 7)
    saved_model, saved_opt, saved_gen = _reload(model.state_dict()), _reload(opt.state_dict()), gen.get_state()

    model2 = task.init_model(torch.Generator())
    model2.load_state_dict(saved_model)
    opt2 = schedulefree.create(model2, hp, _info(step_hint=20))
    opt2.load_state_dict(saved_opt)
    gen2 = torch.Generator()
    gen2.set_state(saved_gen)
    _linreg_run(model, opt, task, gen, 8)
    _linreg_run(model2, opt2, task, gen2, 8)
    assert torch.equal(model.weight, model2.weight)
    with opt.eval_params(), opt2.eval_params():
        assert torch.equal(model.weight, model2.weight)


def test_bf16_state_dict_round_trip_keeps_float32_state() -> None:
    params = _torch_params(torch.bfloat16)
    opt = AdamWScheduleFree(params, lr=0.05, warmup_steps=3)
    for _ in range(4):
        _set_quad_grads(params)
        opt.step()
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = AdamWScheduleFree(params2, lr=0.05, warmup_steps=3)
    opt2.load_state_dict(_reload(opt.state_dict()))
    for p in params2:  # torch's loader would have cast them to bf16
        assert opt2.state[p]["x"].dtype == opt2.state[p]["z"].dtype == torch.float32
    for _ in range(4):
        for o, ps in ((opt, params), (opt2, params2)):
            _set_quad_grads(ps)
            o.step()
    assert all(torch.equal(p, q) for p, q in zip(params, params2))
    assert all(torch.equal(opt.state[p]["x"], opt2.state[q]["x"]) for p, q in zip(params, params2))


def test_bf16_parameters_keep_float32_sequences() -> None:
    params = _torch_params(torch.bfloat16)
    opt = AdamWScheduleFree(params, lr=0.05, weight_decay=0.01)
    for _ in range(5):
        _set_quad_grads(params)
        opt.step()
    for p in params:
        st = opt.state[p]
        assert p.dtype == torch.bfloat16 and st["x"].dtype == st["z"].dtype == st["exp_avg_sq"].dtype == torch.float32
        assert torch.isfinite(st["z"]).all()
        y = torch._foreach_lerp([st["z"]], [st["x"]], 0.9)[0]
        assert torch.equal(p.detach(), y.to(torch.bfloat16))  # the model holds y rounded once
    before = [p.detach().clone() for p in params]
    with opt.eval_params():
        assert all(torch.equal(p.detach(), opt.state[p]["x"].to(torch.bfloat16)) for p in params)
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_factory_warmup_capability_and_bad_input() -> None:
    model = torch.nn.Linear(4, 2)
    opt = schedulefree.create(model, dict(schedulefree.defaults), _info(step_hint=1000))
    assert isinstance(opt, AdamWScheduleFree)  # no external schedule wrapped around it
    assert opt.param_groups[0]["warmup_steps"] == 50
    assert Capability.EVAL_PARAMS in schedulefree.capabilities
    with pytest.raises(UsageError):
        schedulefree.create(model, {**schedulefree.defaults, "lr": -1.0}, _info())
