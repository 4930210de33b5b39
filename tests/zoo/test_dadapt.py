"""D-Adaptation Adam: the d estimate after two steps in closed form, a float64 numpy transcription of the update for
four steps (with a varying lr multiplier, weight decay and bias correction), the growth cap, state_dict round trips
through the scheduled submission, bf16 parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.errors import UsageError
from optbench.schedules import Scheduled
from optbench_submissions.dadapt import DAdaptAdam, dadapt
from optbench_workloads.linreg import workload as linreg
from tests.zoo.helpers import linreg_run, reload, short_info

SHAPES = [(3, 2), (4,)]
RNG = np.random.default_rng(2)
X0 = [RNG.normal(size=s) for s in SHAPES]
# gradients with a common drift, so that <g_k, s_k> > 0 and d grows
GRADS = [[1.0 + 0.3 * RNG.normal(size=s) for s in SHAPES] for _ in range(4)]


def _params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(a, dtype=dtype)) for a in X0]


def _set_grads(params: list[torch.nn.Parameter], grads: list[np.ndarray]) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=p.dtype)


def test_d_after_two_equal_gradients_in_closed_form() -> None:
    b1, b2, d0, eps = 0.9, 0.999, 1e-3, 1e-8
    params = [torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))]
    opt = DAdaptAdam(params, lr=1.0, betas=(b1, b2), eps=eps, d0=d0)
    params[0].grad = torch.ones(5, dtype=torch.float64)
    opt.step()
    assert opt.param_groups[0]["d"] == d0  # s_0 = 0: no estimate yet
    # x_1 = -m_1 / (sqrt(v_1) + eps) with m_1 = (1 - b1) d0 g, v_1 = (1 - b2) g^2
    x1 = -(1 - b1) * d0 / (math.sqrt(1 - b2) + eps)
    torch.testing.assert_close(params[0].detach(), torch.full((5,), x1, dtype=torch.float64))
    opt.step()  # the same gradient again
    # r_2 / (1 - sqrt b2) = d0 (1 - sqrt b2) d0 5 / (sqrt(1 - b2) + eps);  ||s_2||_1 = (1 - sqrt b2) d0 5 (1 + sqrt b2)
    expected = d0 / ((math.sqrt(1 - b2) + eps) * (1 + math.sqrt(b2)))
    assert opt.param_groups[0]["d"] == pytest.approx(expected, rel=1e-12)
    assert expected > 15 * d0


def reference(steps: int, gammas: list[float], *, betas: tuple[float, float], eps: float, wd: float, d0: float,
              bias_correction: bool) -> list[tuple[float, list[np.ndarray]]]:
    """The documented D-Adapt Adam update in float64: (d_{k+1}, x_{k+1}) after each step."""
    b1, b2 = betas
    sb2 = math.sqrt(b2)
    x = [a.copy() for a in X0]
    m, v, s = ([np.zeros_like(a) for a in X0] for _ in range(3))
    d, r, out = d0, 0.0, []
    for k in range(steps):
        g = GRADS[k]
        bc = math.sqrt(1 - b2 ** (k + 1)) / (1 - b1 ** (k + 1)) if bias_correction else 1.0
        lam = d * gammas[k] * bc
        r = sb2 * r + (1 - sb2) * lam * sum(float(np.sum(gi * si / (np.sqrt(vi) + eps))) for gi, si, vi in zip(g, s, v))
        m = [b1 * mi + (1 - b1) * lam * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g)]
        s = [sb2 * si + (1 - sb2) * lam * gi for si, gi in zip(s, g)]
        d_new = max(d, r / ((1 - sb2) * sum(float(np.abs(si).sum()) for si in s)))
        x = [xi - lam * wd * xi - mi / (np.sqrt(vi) + eps) for xi, mi, vi in zip(x, m, v)]
        d = d_new
        out.append((d, [a.copy() for a in x]))
    return out


@pytest.mark.parametrize("kw", [
    dict(betas=(0.9, 0.999), eps=1e-8, wd=0.0, d0=1e-3, bias_correction=False),
    dict(betas=(0.8, 0.99), eps=1e-6, wd=0.05, d0=1e-2, bias_correction=True),
])
def test_four_steps_match_float64_equations(kw: dict) -> None:
    gammas = [0.5, 1.0, 0.8, 0.3]  # a schedule acting on the multiplier
    params = _params()
    opt = DAdaptAdam(params, lr=gammas[0], betas=kw["betas"], eps=kw["eps"], weight_decay=kw["wd"], d0=kw["d0"],
                     bias_correction=kw["bias_correction"])
    ref = reference(4, gammas, **kw)
    for k in range(4):
        opt.param_groups[0]["lr"] = gammas[k]
        _set_grads(params, GRADS[k])
        opt.step()
        d_ref, x_ref = ref[k]
        assert opt.param_groups[0]["d"] == pytest.approx(d_ref, rel=1e-10)
        for p, xr in zip(params, x_ref):
            np.testing.assert_allclose(p.detach().numpy(), xr, rtol=1e-10, atol=1e-14)
    assert ref[-1][0] > 2 * kw["d0"]  # d actually moved


def test_growth_rate_caps_the_increase() -> None:
    params = [torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))]
    opt = DAdaptAdam(params, d0=1e-3, growth_rate=1.5)
    for _ in range(3):
        params[0].grad = torch.ones(5, dtype=torch.float64)
        before = opt.param_groups[0]["d"]
        opt.step()
        assert opt.param_groups[0]["d"] <= 1.5 * before * (1 + 1e-12)
    assert opt.param_groups[0]["d"] == pytest.approx(1e-3 * 1.5**2)


def test_state_dict_round_trip_continues_identically() -> None:
    task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"))
    hp = dict(dadapt.defaults)
    gen = torch.Generator().manual_seed(0)
    model = task.init_model(gen)
    opt = dadapt.create(model, hp, short_info())
    assert isinstance(opt, Scheduled)  # warmup + cosine on the multiplier
    linreg_run(task, model, opt, gen, 9)
    saved = reload({"model": model.state_dict(), "opt": opt.state_dict()})
    gen2 = torch.Generator()
    gen2.set_state(gen.get_state())
    model2 = task.init_model(torch.Generator())
    model2.load_state_dict(saved["model"])
    opt2 = dadapt.create(model2, hp, short_info())
    opt2.load_state_dict(saved["opt"])
    linreg_run(task, model, opt, gen, 9)
    linreg_run(task, model2, opt2, gen2, 9)
    assert torch.equal(model.weight, model2.weight)
    assert opt.param_groups[0]["d"] == opt2.param_groups[0]["d"] > hp["d0"]


def test_bf16_parameters_keep_float32_state_and_round_trip() -> None:
    params = _params(torch.bfloat16)
    opt = DAdaptAdam(params, d0=1e-2, weight_decay=0.01)
    for k in range(3):
        _set_grads(params, GRADS[k])
        opt.step()
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert all(opt.state[p][key].dtype == torch.float32 for key in ("exp_avg", "exp_avg_sq", "s"))
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = DAdaptAdam(params2, d0=1e-2, weight_decay=0.01)
    opt2.load_state_dict(reload(opt.state_dict()))
    assert opt2.state[params2[0]]["s"].dtype == torch.float32
    for o, ps in ((opt, params), (opt2, params2)):
        _set_grads(ps, GRADS[3])
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(params, params2))


def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        dadapt.create(torch.nn.Linear(3, 1), {**dadapt.defaults, "d0": 0.0}, short_info())


def test_d_stays_on_the_parameters_device_and_is_put_back_there_on_load() -> None:
    """d and the numerator are 0-d float64 tensors on the parameters' device (meta here, the only other device of a
    CPU machine: any read of them would raise), never read back by a step; a state dict loaded from the CPU, as
    checkpoints are, puts them back on the parameters' device."""
    params = [torch.nn.Parameter(torch.empty(3, 2, device="meta"))]
    opt = DAdaptAdam(params, weight_decay=0.1)
    for _ in range(2):
        params[0].grad = torch.empty(3, 2, device="meta")
        opt.step()
    group = opt.param_groups[0]
    for key in ("d", "numerator"):
        assert group[key].device.type == "meta" and group[key].dtype == torch.float64 and group[key].dim() == 0
    saved = opt.state_dict()
    saved["param_groups"][0].update(d=torch.tensor(0.5, dtype=torch.float64), numerator=torch.tensor(0.25))
    again = DAdaptAdam([torch.nn.Parameter(torch.empty(3, 2, device="meta"))], weight_decay=0.1)
    again.load_state_dict(saved)
    assert {again.param_groups[0][key].device.type for key in ("d", "numerator")} == {"meta"}
