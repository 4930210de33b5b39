"""Prodigy: d after two steps by hand, a float64 numpy transcription of the paper's Algorithm 3 for four steps (with a
varying lr multiplier, weight decay, safeguard_warmup, bias correction), the growth cap, state_dict round trips
through the scheduled submission, bf16 parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.errors import UsageError
from optbench.schedules import Scheduled
from optbench_submissions.prodigy import Prodigy, prodigy
from optbench_workloads.linreg import workload as linreg
from tests.zoo.helpers import linreg_run, reload, short_info

SHAPES = [(2, 3), (5,)]
RNG = np.random.default_rng(3)
X0 = [RNG.normal(size=s) for s in SHAPES]
GRADS = [[1.0 + 0.3 * RNG.normal(size=s) for s in SHAPES] for _ in range(4)]  # a common drift: d grows


def _params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(a, dtype=dtype)) for a in X0]


def _set_grads(params: list[torch.nn.Parameter], grads: list[np.ndarray]) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=p.dtype)


def test_d_after_two_steps_by_hand() -> None:
    b1, b2, d0, eps = 0.9, 0.999, 1e-3, 1e-8
    b3 = math.sqrt(b2)
    g0, g1 = np.array([1.0, 2.0, -0.5]), np.array([0.5, 1.5, -1.0])
    params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
    opt = Prodigy(params, betas=(b1, b2), eps=eps, d0=d0)
    params[0].grad = torch.tensor(g0)
    opt.step()
    assert opt.param_groups[0]["d"] == d0  # x_0 - x_0 = 0: r_1 = 0
    # x_1 = -d0 * m_1 / (sqrt(v_1) + d0 eps), m_1 = (1 - b1) d0 g0, v_1 = (1 - b2) d0^2 g0^2
    x1 = -d0 * (1 - b1) * d0 * g0 / (math.sqrt(1 - b2) * d0 * np.abs(g0) + d0 * eps)
    np.testing.assert_allclose(params[0].detach().numpy(), x1, rtol=1e-12)
    params[0].grad = torch.tensor(g1)
    opt.step()
    r2 = d0**2 * float(np.dot(g1, -x1))  # r_2 = b3 * 0 + gamma d0^2 <g1, x0 - x1>
    s2 = b3 * d0**2 * g0 + d0**2 * g1
    expected = max(d0, r2 / np.abs(s2).sum())
    assert opt.param_groups[0]["d"] == pytest.approx(expected, rel=1e-12)
    assert expected > d0


def reference(steps: int, gammas: list[float], *, betas: tuple[float, float], eps: float, wd: float, d0: float,
              d_coef: float, safeguard: bool, bias_correction: bool) -> list[tuple[float, list[np.ndarray]]]:
    """Algorithm 3 in float64 (without the (1 - beta3) factor that cancels): (d_{k+1}, x_{k+1}) after each step."""
    b1, b2 = betas
    b3 = math.sqrt(b2)
    x = [a.copy() for a in X0]
    m, v, s = ([np.zeros_like(a) for a in X0] for _ in range(3))
    d, r, out = d0, 0.0, []
    for k in range(steps):
        g = GRADS[k]
        bc = math.sqrt(1 - b2 ** (k + 1)) / (1 - b1 ** (k + 1)) if bias_correction else 1.0
        gamma = gammas[k] * bc
        m = [b1 * mi + (1 - b1) * d * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * d**2 * gi**2 for vi, gi in zip(v, g)]
        r = b3 * r + gamma * d**2 * sum(float(np.sum(gi * (x0 - xi))) for gi, x0, xi in zip(g, X0, x))
        s = [b3 * si + (d**2 if safeguard else gamma * d**2) * gi for si, gi in zip(s, g)]
        d_new = max(d, d_coef * r / sum(float(np.abs(si).sum()) for si in s))
        x = [xi - gamma * d * wd * xi - gamma * d * mi / (np.sqrt(vi) + d * eps) for xi, mi, vi in zip(x, m, v)]
        d = d_new
        out.append((d, [a.copy() for a in x]))
    return out


@pytest.mark.parametrize("kw", [
    dict(betas=(0.9, 0.999), eps=1e-8, wd=0.0, d0=1e-3, d_coef=1.0, safeguard=False, bias_correction=False),
    dict(betas=(0.8, 0.99), eps=1e-6, wd=0.05, d0=1e-3, d_coef=2.0, safeguard=True, bias_correction=False),
    dict(betas=(0.9, 0.999), eps=1e-8, wd=0.0, d0=1e-3, d_coef=1.0, safeguard=False, bias_correction=True),
])
def test_four_steps_match_float64_algorithm(kw: dict) -> None:
    gammas = [0.5, 1.0, 0.8, 0.3]
    params = _params()
    opt = Prodigy(params, lr=gammas[0], betas=kw["betas"], eps=kw["eps"], weight_decay=kw["wd"], d0=kw["d0"],
                  d_coef=kw["d_coef"], safeguard_warmup=kw["safeguard"], bias_correction=kw["bias_correction"])
    ref = reference(4, gammas, **kw)
    for k in range(4):
        opt.param_groups[0]["lr"] = gammas[k]
        _set_grads(params, GRADS[k])
        opt.step()
        d_ref, x_ref = ref[k]
        assert opt.param_groups[0]["d"] == pytest.approx(d_ref, rel=1e-10)
        for p, xr in zip(params, x_ref):
            np.testing.assert_allclose(p.detach().numpy(), xr, rtol=1e-10, atol=1e-14)
    if not kw["bias_correction"]:  # (bias correction's small first multipliers keep d at d0 for these four steps)
        assert ref[-1][0] > 1.5 * kw["d0"]  # d actually moved


def test_growth_rate_caps_increases_after_the_first() -> None:
    params = [torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))]
    free = [torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))]
    capped, uncapped = Prodigy(params, d0=1e-3, growth_rate=1.1), Prodigy(free, d0=1e-3)
    ds = []
    for _ in range(6):
        for o, ps in ((capped, params), (uncapped, free)):
            ps[0].grad = torch.ones(4, dtype=torch.float64)
            o.step()
        ds.append(capped.param_groups[0]["d"])
    first_rise = next(i for i, d in enumerate(ds) if d > 1e-3)
    for prev, cur in zip(ds[first_rise:], ds[first_rise + 1:]):
        assert cur <= 1.1 * prev * (1 + 1e-12)
    assert ds[-1] < uncapped.param_groups[0]["d"]


def test_state_dict_round_trip_continues_identically() -> None:
    task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"))
    hp = dict(prodigy.defaults)
    gen = torch.Generator().manual_seed(0)
    model = task.init_model(gen)
    opt = prodigy.create(model, hp, short_info())
    assert isinstance(opt, Scheduled)
    linreg_run(task, model, opt, gen, 9)
    saved = reload({"model": model.state_dict(), "opt": opt.state_dict()})
    gen2 = torch.Generator()
    gen2.set_state(gen.get_state())
    model2 = task.init_model(torch.Generator())
    model2.load_state_dict(saved["model"])
    opt2 = prodigy.create(model2, hp, short_info())
    opt2.load_state_dict(saved["opt"])
    linreg_run(task, model, opt, gen, 9)
    linreg_run(task, model2, opt2, gen2, 9)
    assert torch.equal(model.weight, model2.weight)
    assert opt.param_groups[0]["d"] == opt2.param_groups[0]["d"] > hp["d0"]


def test_bf16_parameters_keep_float32_state_and_round_trip() -> None:
    params = _params(torch.bfloat16)
    opt = Prodigy(params, d0=1e-2, weight_decay=0.01)
    for k in range(3):
        _set_grads(params, GRADS[k])
        opt.step()
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert all(opt.state[p][key].dtype == torch.float32 for key in ("exp_avg", "exp_avg_sq", "s", "p0"))
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = Prodigy(params2, d0=1e-2, weight_decay=0.01)
    opt2.load_state_dict(reload(opt.state_dict()))
    assert opt2.state[params2[0]]["p0"].dtype == torch.float32
    for o, ps in ((opt, params), (opt2, params2)):
        _set_grads(ps, GRADS[3])
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(params, params2))


def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        prodigy.create(torch.nn.Linear(3, 1), {**prodigy.defaults, "d_coef": 0.0}, short_info())


def test_d_stays_on_the_parameters_device_and_is_put_back_there_on_load() -> None:
    """d, d_max and r are 0-d float64 tensors on the parameters' device (meta here: any read would raise), never
    read back by a step; a state dict loaded from the CPU puts them back on the parameters' device."""
    params = [torch.nn.Parameter(torch.empty(3, 2, device="meta"))]
    opt = Prodigy(params, weight_decay=0.1, growth_rate=2.0)
    for _ in range(2):
        params[0].grad = torch.empty(3, 2, device="meta")
        opt.step()
    keys = ("d", "d_max", "numerator")
    group = opt.param_groups[0]
    assert all(group[k].device.type == "meta" and group[k].dtype == torch.float64 and group[k].dim() == 0 for k in keys)
    saved = opt.state_dict()
    saved["param_groups"][0].update({k: torch.tensor(0.5, dtype=torch.float64) for k in keys})
    again = Prodigy([torch.nn.Parameter(torch.empty(3, 2, device="meta"))], weight_decay=0.1, growth_rate=2.0)
    again.load_state_dict(saved)
    assert {again.param_groups[0][k].device.type for k in keys} == {"meta"}
