"""Schedules at the edges the hand-value tests miss: one-step warmups and decays, past the end, the defaults of
from_hparams, and the Scheduled wrapper's closure and pass-through hooks. Each test kills mutmut survivors of
optbench/schedules.py (benchmarks/mutation.py; docs/TESTING.md, "Mutation testing")."""

from __future__ import annotations

import pytest
import torch

from optbench.schedules import Constant, Scheduled, WarmupCosine, WarmupLinear, from_hparams


@pytest.mark.parametrize("kind", [WarmupCosine, WarmupLinear])
def test_one_step_warmup_reaches_full_lr_at_once(kind):
    # warmup=1: the first update already uses the base lr (the divisor is the warmup length, not a floor of 2).
    assert kind(warmup=1, total=10)(1) == 1.0


@pytest.mark.parametrize("kind", [WarmupCosine, WarmupLinear])
def test_one_step_decay_lands_on_the_floor(kind):
    # total - warmup = 1: the step after warmup is the end of the decay.
    assert kind(warmup=0, total=1, floor=0.25)(1) == pytest.approx(0.25)


@pytest.mark.parametrize("kind", [WarmupCosine, WarmupLinear])
def test_past_the_end_stays_on_the_floor(kind):
    schedule = kind(warmup=2, total=10, floor=0.1)
    assert schedule(10) == pytest.approx(0.1)
    assert schedule(25) == pytest.approx(0.1) and schedule(10**6) == pytest.approx(0.1)


def test_constant_is_one_everywhere():
    assert [Constant()(t) for t in (1, 2, 1000)] == [1.0, 1.0, 1.0]


def test_from_hparams_defaults_constant_no_warmup_zero_floor():
    assert isinstance(from_hparams({}, total_steps=100), Constant)
    cos = from_hparams({"schedule": "cosine"}, total_steps=10)
    assert cos(1) < 1.0 and cos(10) == 0.0  # no warmup by default; decays to a floor of 0


def test_constant_with_warmup_holds_exactly_one_after_the_ramp():
    ramp = from_hparams({"schedule": "constant", "warmup_frac": 0.1}, total_steps=100)
    assert ramp(5) == pytest.approx(0.5)
    assert [ramp(t) for t in (10, 11, 10**4, 10**9)] == [1.0, 1.0, 1.0, 1.0]


def test_from_hparams_linear_uses_warmup_total_and_floor():
    lin = from_hparams({"schedule": "linear", "warmup_frac": 0.1, "decay_floor": 0.2}, total_steps=100)
    assert isinstance(lin, WarmupLinear)
    assert lin(5) == pytest.approx(0.5)
    assert lin(55) == pytest.approx(1.0 - 0.8 * 0.5)
    assert lin(100) == pytest.approx(0.2) and lin(400) == pytest.approx(0.2)


def test_unknown_schedule_message_lists_the_choices():
    with pytest.raises(ValueError, match=r"'zigzag'; choose one of constant, cosine, linear, wsd, invsqrt, step, poly$"):
        from_hparams({"schedule": "zigzag"}, total_steps=10)


def _sgd() -> tuple[torch.nn.Parameter, Scheduled]:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    return p, Scheduled(torch.optim.SGD([p], lr=0.5), Constant())


def test_step_passes_the_closure_and_returns_its_loss():
    p, opt = _sgd()
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [1] and loss.item() == pytest.approx(5.0)
    assert p.detach().tolist() == pytest.approx([0.0, 0.0])  # p - 0.5 * 2p


def test_zero_grad_reaches_the_optimizer():
    p, opt = _sgd()
    (p**2).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and p.grad.abs().sum().item() == 0.0
    opt.zero_grad()
    assert p.grad is None


def test_getattr_forwards_optional_hooks_but_not_optimizer():
    class WithHook(torch.optim.SGD):
        batch_size = 7

    opt = Scheduled(WithHook([torch.nn.Parameter(torch.ones(1))], lr=0.1), Constant())
    assert opt.batch_size == 7
    with pytest.raises(AttributeError, match="no_such_hook"):
        opt.no_such_hook
    # before __init__ sets it, looking up `optimizer` must fail cleanly (copy/pickle probe), not recurse
    bare = Scheduled.__new__(Scheduled)
    with pytest.raises(AttributeError, match="^optimizer$"):
        bare.__getattr__("optimizer")
