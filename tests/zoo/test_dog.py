"""DoG / LDoG: eta_t = rbar_t / sqrt(sum ||g||^2) with r_eps = reps_rel (1 + ||x_0||) against float64 numpy steps,
per-tensor LDoG, the polynomial-decay average and its exact evaluation swap, state_dict round trips, bf16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.api import Capability
from optbench.errors import UsageError
from optbench_submissions.dog import DoG, dog, ldog
from optbench_workloads.linreg import workload as linreg
from tests.zoo.helpers import linreg_run, reload, short_info

SHAPES = [(3, 2), (4,)]
RNG = np.random.default_rng(4)
X0 = [RNG.normal(size=s) for s in SHAPES]
D = [RNG.uniform(0.5, 2.0, s) for s in SHAPES]
A = [RNG.normal(size=s) for s in SHAPES]


def _grads(xs: list[np.ndarray]) -> list[np.ndarray]:
    """Gradient of 0.5 sum D (x - A)^2 (taken at the current iterate)."""
    return [d * (x - a) for d, x, a in zip(D, xs, A)]


def _params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(a, dtype=dtype)) for a in X0]


def _set_grads(params: list[torch.nn.Parameter]) -> None:
    for p, g in zip(params, _grads([p.detach().double().numpy() for p in params])):
        p.grad = torch.tensor(g, dtype=p.dtype)


def reference(steps: int, *, c: float, reps_rel: float, eps: float, wd: float, layerwise: bool
              ) -> list[tuple[list[float], list[np.ndarray]]]:
    """DoG (one block) or LDoG (one block per tensor) in float64: (eta_t per block, x_{t+1}) after each step."""
    x = [a.copy() for a in X0]
    blocks = [[i] for i in range(len(x))] if layerwise else [list(range(len(x)))]

    def norm(arrs: list[np.ndarray]) -> float:
        return math.sqrt(sum(float(np.sum(a**2)) for a in arrs))

    r_eps = [reps_rel * (1 + norm([X0[i] for i in b])) for b in blocks]
    rbar = list(r_eps)
    gsum = [eps] * len(blocks)
    out = []
    for _ in range(steps):
        g = [gi + wd * xi for gi, xi in zip(_grads(x), x)]
        etas = []
        for j, b in enumerate(blocks):
            rbar[j] = max(rbar[j], norm([x[i] - X0[i] for i in b]))
            gsum[j] += norm([g[i] for i in b]) ** 2
            etas.append(c * rbar[j] / math.sqrt(gsum[j]))
            for i in b:
                x[i] = x[i] - etas[j] * g[i]
        out.append((etas, [a.copy() for a in x]))
    return out


@pytest.mark.parametrize("layerwise", [False, True])
@pytest.mark.parametrize("kw", [dict(c=1.0, reps_rel=1e-6, eps=1e-8, wd=0.0), dict(c=2.0, reps_rel=0.3, eps=0.0,
                                                                                    wd=0.1)])
def test_three_steps_match_float64_reference(kw: dict, layerwise: bool) -> None:
    params = _params()
    opt = DoG(params, lr=kw["c"], reps_rel=kw["reps_rel"], eps=kw["eps"], weight_decay=kw["wd"], layerwise=layerwise)
    ref = reference(3, layerwise=layerwise, **kw)
    for t in range(3):
        _set_grads(params)
        opt.step()
        etas, xs = ref[t]
        for p, xr in zip(params, xs):
            np.testing.assert_allclose(p.detach().numpy(), xr, rtol=1e-12, atol=1e-15)
        if layerwise:
            got = [float(opt.state[p]["rbar"] / opt.state[p]["G"].sqrt()) * kw["c"] for p in params]
        else:
            got = [kw["c"] * opt.param_groups[0]["rbar"] / math.sqrt(opt.param_groups[0]["G"])]
        np.testing.assert_allclose(got, etas, rtol=1e-12)


def test_first_step_size_is_reps_over_gradient_norm() -> None:
    params = _params()
    opt = DoG(params)  # c = 1, reps_rel = 1e-6, eps = 1e-8
    _set_grads(params)
    g = [p.grad.clone() for p in params]
    opt.step()
    x0_norm = math.sqrt(sum(float(np.sum(a**2)) for a in X0))
    eta0 = 1e-6 * (1 + x0_norm) / math.sqrt(sum(float((gi**2).sum()) for gi in g) + 1e-8)
    for p, x, gi in zip(params, X0, g):
        torch.testing.assert_close(p.detach(), torch.tensor(x) - eta0 * gi, rtol=1e-14, atol=0)


def test_polynomial_decay_average_and_exact_eval_swap() -> None:
    params = _params(torch.float32)
    twin = _params(torch.float32)
    opt, opt_twin = DoG(params, reps_rel=1e-2, average=8.0), DoG(twin, reps_rel=1e-2, average=8.0)
    avg = None
    for t in range(1, 7):
        for o, ps in ((opt, params), (opt_twin, twin)):
            _set_grads(ps)
            o.step()
        xs = [p.detach().double().clone() for p in params]
        w = 9.0 / (t + 8.0)
        avg = xs if avg is None else [(1 - w) * a + w * x for a, x in zip(avg, xs)]
        for _ in range(2):
            with opt.eval_params():
                for p, a in zip(params, avg):
                    torch.testing.assert_close(p.detach().double(), a, rtol=1e-6, atol=1e-7)
            assert all(torch.equal(p.detach(), x.float()) for p, x in zip(params, xs))
    assert all(torch.equal(p, q) for p, q in zip(params, twin))  # evaluating never changes training


def test_no_average_means_eval_at_the_iterate() -> None:
    params = _params(torch.float32)
    opt = DoG(params, average=0.0)
    for _ in range(3):
        _set_grads(params)
        opt.step()
    before = [p.detach().clone() for p in params]
    with opt.eval_params():
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    assert "avg" not in opt.state[params[0]]


@pytest.mark.parametrize("spec", [dog, ldog], ids=["dog", "ldog"])
def test_state_dict_round_trip_continues_identically(spec) -> None:
    task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"))
    hp = dict(spec.defaults)
    gen = torch.Generator().manual_seed(0)
    model = task.init_model(gen)
    opt = spec.create(model, hp, short_info())
    assert isinstance(opt, DoG)  # no external schedule
    linreg_run(task, model, opt, gen, 9)
    saved = reload({"model": model.state_dict(), "opt": opt.state_dict()})
    gen2 = torch.Generator()
    gen2.set_state(gen.get_state())
    model2 = task.init_model(torch.Generator())
    model2.load_state_dict(saved["model"])
    opt2 = spec.create(model2, hp, short_info())
    opt2.load_state_dict(saved["opt"])
    linreg_run(task, model, opt, gen, 9)
    linreg_run(task, model2, opt2, gen2, 9)
    assert torch.equal(model.weight, model2.weight)
    with opt.eval_params(), opt2.eval_params():
        assert torch.equal(model.weight, model2.weight)


@pytest.mark.parametrize("layerwise", [False, True])
def test_bf16_parameters_and_round_trip(layerwise: bool) -> None:
    params = _params(torch.bfloat16)
    opt = DoG(params, reps_rel=1e-2, layerwise=layerwise, average=8.0)
    for _ in range(3):
        _set_grads(params)
        opt.step()
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert opt.state[p]["avg"].dtype == torch.float32
        if layerwise:
            assert opt.state[p]["rbar"].dtype == opt.state[p]["G"].dtype == torch.float32
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = DoG(params2, reps_rel=1e-2, layerwise=layerwise, average=8.0)
    opt2.load_state_dict(reload(opt.state_dict()))
    assert opt2.state[params2[0]]["avg"].dtype == torch.float32
    for o, ps in ((opt, params), (opt2, params2)):
        _set_grads(ps)
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(params, params2))


def test_specs_and_bad_input() -> None:
    assert Capability.EVAL_PARAMS in dog.capabilities and Capability.EVAL_PARAMS in ldog.capabilities
    model = torch.nn.Linear(3, 2)
    assert dog.create(model, dict(dog.defaults), short_info()).param_groups[0]["layerwise"] is False
    assert ldog.create(model, dict(ldog.defaults), short_info()).param_groups[0]["layerwise"] is True
    with pytest.raises(UsageError):
        dog.create(model, {**dog.defaults, "reps_rel": 0.0}, short_info())


def test_rbar_and_g_stay_on_the_parameters_device_and_are_put_back_there_on_load() -> None:
    """DoG's rbar and G are 0-d float64 tensors on the parameters' device (meta here: any read would raise), never
    read back by a step; a state dict loaded from the CPU puts them back on the parameters' device."""
    params = [torch.nn.Parameter(torch.empty(3, 2, device="meta"))]
    opt = DoG(params, weight_decay=0.1, average=8.0)
    for _ in range(3):
        params[0].grad = torch.empty(3, 2, device="meta")
        opt.step()
    group = opt.param_groups[0]
    assert all(group[k].device.type == "meta" and group[k].dtype == torch.float64 for k in ("rbar", "G"))
    saved = opt.state_dict()
    saved["param_groups"][0].update(rbar=torch.tensor(0.5, dtype=torch.float64), G=torch.tensor(2.0))
    again = DoG([torch.nn.Parameter(torch.empty(3, 2, device="meta"))], weight_decay=0.1, average=8.0)
    again.load_state_dict(saved)
    assert {again.param_groups[0][k].device.type for k in ("rbar", "G")} == {"meta"}


def test_a_zero_first_gradient_is_refused_when_eps_is_zero() -> None:
    """With eps = 0 the first G can be 0: checked once, at the first step (the only host read DoG makes)."""
    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    opt = DoG(params, eps=0.0)
    params[0].grad = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="nonzero first gradient"):
        opt.step()
