"""SophiaG: the Hessian EMA is fed by the sampled-label gradients of the closure (and the real gradients are used and
restored), the clip, a float64 numpy transcription of the paper's Algorithm 3, state_dict round trips, bf16."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from optbench.api import Capability, TrialInfo
from optbench.errors import UsageError
from optbench.schedules import Scheduled
from optbench_submissions.sophia import SophiaG, sophia
from optbench_workloads.linreg import workload as linreg

SHAPES = [(2, 3), (4,)]
RNG = np.random.default_rng(1)
THETA0 = [RNG.normal(size=s) for s in SHAPES]
REAL = [[RNG.normal(size=s) for s in SHAPES] for _ in range(4)]  # real-loss gradient of each step
SAMPLED = [[RNG.normal(size=s) for s in SHAPES] for _ in range(4)]  # sampled-label gradient of each estimate


class ScriptedClosure:
    """A harness-like closure whose sampled-loss gradient is scripted: loss = sum_i <c_i, p_i>, so grad p_i = c_i."""

    def __init__(self, params: list[torch.nn.Parameter], sampled: list[list[np.ndarray]]) -> None:
        self.params, self.sampled, self.calls = params, sampled, []

    def __call__(self, sampled: bool = False) -> torch.Tensor:
        assert sampled, "Sophia must only ask for the sampled-label loss"
        for p in self.params:
            p.grad = None  # zero_grad(set_to_none=True), as the harness's closure does
        coefs = [torch.tensor(c, dtype=p.dtype) for c, p in zip(self.sampled[len(self.calls)], self.params)]
        with torch.enable_grad():
            loss = sum((c * p).sum() for c, p in zip(coefs, self.params))
            loss.backward()
        self.calls.append(sampled)
        return loss.detach()


def reference(steps: int, *, lr: float, betas: tuple[float, float], rho: float, wd: float, eps: float, k: int,
              batch: int, with_closure: bool = True) -> list[list[np.ndarray]]:
    """Algorithm 3 (GNB) in float64; the estimate at steps 1, k+1, 2k+1, ... uses SAMPLED[j] for the j-th one."""
    b1, b2 = betas
    theta = [a.copy() for a in THETA0]
    m = [np.zeros_like(a) for a in THETA0]
    h = [np.zeros_like(a) for a in THETA0]
    estimates, out = 0, []
    for t in range(1, steps + 1):
        if with_closure and (t - 1) % k == 0:
            h = [b2 * hi + (1 - b2) * batch * gh**2 for hi, gh in zip(h, SAMPLED[estimates])]
            estimates += 1
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * REAL[t - 1][i]
            theta[i] = theta[i] - lr * np.clip(m[i] / np.maximum(rho * h[i], eps), -1.0, 1.0)
        out.append([a.copy() for a in theta])
    return out


def _params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(a, dtype=dtype)) for a in THETA0]


def _set_real(params: list[torch.nn.Parameter], t: int) -> list[torch.Tensor]:
    grads = [torch.tensor(g, dtype=p.dtype) for g, p in zip(REAL[t], params)]
    for p, g in zip(params, grads):
        p.grad = g
    return grads


@pytest.mark.parametrize("kw", [
    dict(lr=0.1, betas=(0.965, 0.99), rho=0.04, wd=0.0, eps=1e-12, k=2, batch=8),
    dict(lr=0.05, betas=(0.9, 0.9), rho=2.0, wd=0.1, eps=1e-12, k=3, batch=1),
])
def test_four_steps_match_float64_algorithm(kw: dict) -> None:
    params = _params()
    opt = SophiaG(params, lr=kw["lr"], betas=kw["betas"], rho=kw["rho"], weight_decay=kw["wd"], eps=kw["eps"],
                  hess_interval=kw["k"], hess_batch=kw["batch"])
    closure = ScriptedClosure(params, SAMPLED)
    ref = reference(4, **kw)
    clipped = unclipped = 0
    for t in range(4):
        _set_real(params, t)
        opt.step(closure)
        for p, r in zip(params, ref[t]):
            np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
        ratio = torch.cat([(opt.state[p]["exp_avg"] / (kw["rho"] * opt.state[p]["hessian"])).abs().flatten()
                           for p in params])
        clipped, unclipped = clipped + int((ratio > 1).sum()), unclipped + int((ratio < 1).sum())
    assert clipped > 0 and unclipped > 0  # both branches of the clip were exercised
    assert len(closure.calls) == len(range(0, 4, kw["k"]))  # estimates at steps 1, k+1, ...


def test_hessian_ema_uses_sampled_gradients_and_real_gradients_are_restored() -> None:
    params = _params()
    opt = SophiaG(params, lr=0.01, betas=(0.9, 0.95), rho=0.5, weight_decay=0.0, hess_interval=10, hess_batch=4)
    closure = ScriptedClosure(params, SAMPLED)
    real = _set_real(params, 0)
    opt.step(closure)
    assert closure.calls == [True]
    for i, p in enumerate(params):
        st = opt.state[p]
        torch.testing.assert_close(st["hessian"], torch.tensor(0.05 * 4 * SAMPLED[0][i] ** 2), rtol=1e-14, atol=0)
        torch.testing.assert_close(st["exp_avg"], torch.tensor(0.1 * REAL[0][i]), rtol=1e-14, atol=0)  # real grads
        assert p.grad is real[i] and torch.equal(p.grad, torch.tensor(REAL[0][i]))  # restored, untouched
    for t in range(1, 4):  # steps 2..4: no estimate, the EMA stays
        _set_real(params, t)
        opt.step(closure)
    assert closure.calls == [True]
    torch.testing.assert_close(opt.state[params[0]]["hessian"], torch.tensor(0.05 * 4 * SAMPLED[0][0] ** 2))


def test_without_closure_there_is_no_estimate_and_steps_are_signed_momentum() -> None:
    kw = dict(lr=0.02, betas=(0.9, 0.99), rho=0.04, wd=0.1, eps=1e-12, k=2, batch=4)
    params = _params()
    opt = SophiaG(params, lr=kw["lr"], betas=kw["betas"], rho=kw["rho"], weight_decay=kw["wd"],
                  hess_interval=kw["k"], hess_batch=kw["batch"])
    ref = reference(3, with_closure=False, **kw)
    for t in range(3):
        _set_real(params, t)
        before = [p.detach().clone() for p in params]
        opt.step()
        for p, b, r in zip(params, before, ref[t]):
            assert torch.all(opt.state[p]["hessian"] == 0)
            expected = b * (1 - kw["lr"] * kw["wd"]) - kw["lr"] * torch.sign(opt.state[p]["exp_avg"])
            torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12)


def _info(batch_size: int = 32) -> TrialInfo:
    return TrialInfo(workload="linreg", size="tiny", step_hint=30, max_steps=60, batch_size=batch_size, device="cpu",
                     seed=0)


def _linreg_closure(task, model, batch, sample_gen):
    def closure(sampled: bool = False) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = task.sampled_loss(model, batch, sample_gen) if sampled else task.loss(model, batch)
            loss.backward()
        return loss.detach()
    return closure


def _linreg_run(task, model, opt, gens: tuple[torch.Generator, torch.Generator], steps: int) -> None:
    data_gen, sample_gen = gens
    for _ in range(steps):
        batch = task.next_batch(32, data_gen)
        opt.zero_grad()
        task.loss(model, batch).backward()
        opt.step(_linreg_closure(task, model, batch, sample_gen))


def _reload(obj: dict) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_linreg_estimate_is_batch_times_squared_sampled_gradient() -> None:
    task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"))
    model = task.init_model(torch.Generator())
    opt = sophia.create(model, dict(sophia.defaults), _info())
    assert isinstance(opt, Scheduled) and opt.param_groups[0]["hess_batch"] == 32  # hess_batch 0 -> batch size
    batch = task.next_batch(32, torch.Generator().manual_seed(3))
    task.loss(model, batch).backward()
    real = model.weight.grad.clone()
    opt.step(_linreg_closure(task, model, batch, torch.Generator().manual_seed(4)))
    # the same draw of sampled labels, by hand
    model2 = task.init_model(torch.Generator())
    task.sampled_loss(model2, batch, torch.Generator().manual_seed(4)).backward()
    g_hat = model2.weight.grad
    torch.testing.assert_close(opt.state[model.weight]["hessian"], (1 - 0.99) * 32 * g_hat**2)
    assert torch.equal(model.weight.grad, real)


def test_state_dict_round_trip_continues_identically() -> None:
    task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"))
    hp = {**sophia.defaults, "hess_interval": 3}
    gens = (torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    model = task.init_model(gens[0])
    opt = sophia.create(model, hp, _info())
    _linreg_run(task, model, opt, gens, 7)
    saved = _reload({"model": model.state_dict(), "opt": opt.state_dict()})
    gens2 = (torch.Generator(), torch.Generator())
    for g, g2 in zip(gens, gens2):
        g2.set_state(g.get_state())
    model2 = task.init_model(torch.Generator())
    model2.load_state_dict(saved["model"])
    opt2 = sophia.create(model2, hp, _info())
    opt2.load_state_dict(saved["opt"])
    _linreg_run(task, model, opt, gens, 8)  # crosses estimates at steps 10 and 13
    _linreg_run(task, model2, opt2, gens2, 8)
    assert torch.equal(model.weight, model2.weight)
    assert torch.equal(opt.state[model.weight]["hessian"], opt2.state[model2.weight]["hessian"])


def test_bf16_parameters_keep_float32_state_and_round_trip() -> None:
    params = _params(torch.bfloat16)
    opt = SophiaG(params, lr=0.05, rho=0.5, hess_interval=2, hess_batch=4)
    for t in range(3):
        _set_real(params, t)
        opt.step(ScriptedClosure(params, SAMPLED[t:]))
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert opt.state[p]["exp_avg"].dtype == opt.state[p]["hessian"].dtype == torch.float32
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = SophiaG(params2, lr=0.05, rho=0.5, hess_interval=2, hess_batch=4)
    opt2.load_state_dict(_reload(opt.state_dict()))
    assert opt2.state[params2[0]]["hessian"].dtype == torch.float32
    for o, ps in ((opt, params), (opt2, params2)):
        _set_real(ps, 3)
        o.step(ScriptedClosure(ps, SAMPLED[3:]))
    assert all(torch.equal(p, q) for p, q in zip(params, params2))


def test_capabilities_and_bad_input() -> None:
    assert {Capability.CLOSURE, Capability.SAMPLED_LOSS} <= sophia.capabilities
    with pytest.raises(UsageError):
        sophia.create(torch.nn.Linear(3, 1), {**sophia.defaults, "hess_interval": 0}, _info())
    with pytest.raises(UsageError):
        sophia.create(torch.nn.Linear(3, 1), {**sophia.defaults, "rho": -1.0}, _info())
