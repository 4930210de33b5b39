"""Weight averaging: the EMA and tail means follow their recursions, evaluation sees the averaged weights, and the
training weights come back bit for bit (a real linreg trial trains identically with and without averaging)."""

from __future__ import annotations

import pytest
import torch

from optbench.plugins.averaging import AveragingSpec, averaged_submission, spec_from_hparams, wrap
from optbench.plugins.registry import load_submission, load_workload
from optbench.engine.runner import TrialConfig, run_trial


def _toy(spec: AveragingSpec):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.1), model, spec)
    return model, opt


def _train(model, opt, steps: int) -> list[list[torch.Tensor]]:
    iterates = []
    for i in range(steps):
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(i))
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        iterates.append([p.detach().clone() for p in model.parameters()])
    return iterates


def test_ema_follows_its_half_life_recursion():
    model, opt = _toy(AveragingSpec(kind="ema", halflife=2.0))
    start = [p.detach().clone() for p in model.parameters()]
    iterates = _train(model, opt, 5)
    beta = 0.5 ** 0.5
    expected = start
    for it in iterates:
        expected = [beta * e + (1 - beta) * w for e, w in zip(expected, it)]
    with opt.eval_params():
        got = [p.detach().clone() for p in model.parameters()]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def test_tail_is_the_mean_of_the_iterates_after_start_and_restore_is_exact():
    model, opt = _toy(AveragingSpec(kind="tail", start=2))
    with opt.eval_params():  # no iterate in the tail yet: the current weights
        before = [p.detach().clone() for p in model.parameters()]
    iterates = _train(model, opt, 6)
    trained = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(b, p) for b, p in zip(before, _toy(AveragingSpec(kind="none"))[0].parameters()))
    with opt.eval_params():
        got = [p.detach().clone() for p in model.parameters()]
    mean = [torch.stack([it[i] for it in iterates[2:]]).mean(0) for i in range(2)]
    for g, m in zip(got, mean):
        torch.testing.assert_close(g, m, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(t, p) for t, p in zip(trained, model.parameters()))  # bit for bit


def test_restore_is_exact_even_when_evaluation_raises():
    model, opt = _toy(AveragingSpec(kind="ema", halflife=1.0))
    _train(model, opt, 3)
    trained = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError), opt.eval_params():
        raise RuntimeError("evaluation failed")
    assert all(torch.equal(t, p) for t, p in zip(trained, model.parameters()))


def test_state_dict_round_trip_continues_the_same_average():
    model, opt = _toy(AveragingSpec(kind="tail", start=1))
    _train(model, opt, 3)
    saved = opt.state_dict()
    weights = [p.detach().clone() for p in model.parameters()]
    _train(model, opt, 2)
    with opt.eval_params():
        first = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    opt.load_state_dict(saved)
    _train(model, opt, 2)
    with opt.eval_params():
        second = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown average 'swa'"):
        spec_from_hparams({"average": "swa"}, step_hint=10)
    with pytest.raises(ValueError, match="ema_halflife must be a positive"):
        spec_from_hparams({"ema_halflife": 0}, step_hint=10)
    with pytest.raises(ValueError, match="tail_frac must be in"):
        spec_from_hparams({"tail_frac": 2}, step_hint=10)
    with pytest.raises(ValueError, match="already evaluates at its own parameters"):
        averaged_submission(load_submission("schedulefree").obj)


def _run(results, **hp):
    return run_trial(load_workload("linreg"), load_submission("optbench_submissions.averaged:adamw_avg"),
                     TrialConfig(hparams=hp, max_steps=200, eval_every_steps=50), results_dir=results)


def test_a_real_trial_is_evaluated_at_the_average_and_trains_exactly_as_without(results):
    plain = _run(results, average="none")
    ema = _run(results, average="ema", ema_halflife=30.0)
    instant = _run(results, average="ema", ema_halflife=1e-9)  # beta = 0: the average is the current weights
    # Training is untouched by the swaps: the same losses to the last bit.
    assert [r.train_loss for r in ema.rows] == [r.train_loss for r in plain.rows]
    assert [r.metric_value for r in instant.rows] == [r.metric_value for r in plain.rows]
    # Evaluation sees the average, which lags the iterate: a different (here higher, early on) excess risk.
    assert ema.rows[1].metric_value != plain.rows[1].metric_value
    assert ema.rows[1].metric_value > plain.rows[1].metric_value


def test_averaged_loaded_keeps_origin_and_names_the_result(results):
    from optbench.plugins.averaging import averaged_loaded

    base = load_submission("sgd")
    avg = averaged_loaded(base)
    assert avg.name == "sgd_avg" and avg.label == "sgd_avg" and avg.origin == base.origin
    r = run_trial(load_workload("linreg"), avg, TrialConfig(max_steps=20, eval_every_steps=10), results_dir=results)
    assert r.record.submission == "sgd_avg" and '"average": "ema"' in r.record.hparams
