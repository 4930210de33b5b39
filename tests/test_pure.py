"""Fast tests of the pure parts: schedules, hyperparameter parsing, search spaces."""

from __future__ import annotations

import pytest

from optbench.errors import UsageError
from optbench.plugins.hparams import Choice, Range, merge, parse_assignments, parse_search_space, parse_value
from optbench.schedules import Constant, WarmupCosine, WarmupLinear, from_hparams


def test_warmup_cosine_hand_values():
    s = WarmupCosine(warmup=10, total=110, floor=0.1)
    assert s(1) == pytest.approx(0.1) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay: cos(pi/2) = 0
    assert s(110) == pytest.approx(0.1) and s(10_000) == pytest.approx(0.1)


def test_warmup_linear_hand_values():
    s = WarmupLinear(warmup=4, total=104, floor=0.0)
    assert [s(t) for t in (1, 2, 4)] == pytest.approx([0.25, 0.5, 1.0])
    assert s(54) == pytest.approx(0.5) and s(104) == pytest.approx(0.0)


def test_from_hparams():
    assert isinstance(from_hparams({"schedule": "constant"}, total_steps=100), Constant)
    ramp = from_hparams({"schedule": "constant", "warmup_frac": 0.1}, total_steps=100)
    assert ramp(5) == pytest.approx(0.5) and ramp(50) == pytest.approx(1.0) and ramp(10**6) == pytest.approx(1.0)
    cos = from_hparams({"schedule": "cosine", "warmup_frac": 0.05, "decay_floor": 0.1}, total_steps=200)
    assert cos == WarmupCosine(warmup=10, total=200, floor=0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        from_hparams({"schedule": "zigzag"}, total_steps=10)


def test_scheduled_sets_lr_and_round_trips():
    import torch

    from optbench.schedules import Scheduled

    p = torch.nn.Parameter(torch.ones(2))
    opt = Scheduled(torch.optim.SGD([p], lr=1.0), WarmupLinear(warmup=4, total=8))
    for _ in range(2):
        p.grad = torch.ones(2)
        opt.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    assert p.detach().tolist() == pytest.approx([1 - 0.25 - 0.5] * 2)
    sd = opt.state_dict()
    other = Scheduled(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=1.0), WarmupLinear(warmup=4, total=8))
    other.load_state_dict(sd)
    assert other.t == 2


@pytest.mark.parametrize("text,value", [("0.1", 0.1), ("3", 3), ("true", True), ("True", True), ("None", None),
                                         ("[0.9, 0.95]", [0.9, 0.95]), ("cosine", "cosine"), ("1e-3", 1e-3)])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_parse_assignments_and_merge():
    given = parse_assignments(["lr=0.1", "betas=[0.9,0.99]", "name=a=b"])
    assert given == {"lr": 0.1, "betas": [0.9, 0.99], "name": "a=b"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_assignments(["=3"])
    assert merge({"lr": 1, "wd": 0}, {"lr": 2, "batch_size": 8}, submission="x") == {"lr": 2, "wd": 0,
                                                                                     "batch_size": 8}
    with pytest.raises(UsageError, match="accepts: lr, wd"):
        merge({"lr": 1, "wd": 0}, {"momentum": 0.9}, submission="x")


def test_search_space_parsing_and_points():
    space = parse_search_space({"lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
                                "wd": {"min": 0.0, "max": 0.2, "scaling": "linear"},
                                "schedule": {"feasible_points": ["constant", "cosine"]}})
    assert space.names == ("lr", "wd", "schedule")
    assert isinstance(space.dims[0], Range) and isinstance(space.dims[2], Choice)
    pt = space.point([0.5, 0.5, 0.75])
    assert pt["lr"] == pytest.approx(1e-3) and pt["wd"] == pytest.approx(0.1) and pt["schedule"] == "cosine"
    assert space.point([0.0, 0.0, 0.0])["lr"] == pytest.approx(1e-4)
    fixed = parse_search_space([{"lr": 0.1}, {"lr": 0.2}])
    assert fixed.fixed == ({"lr": 0.1}, {"lr": 0.2})


@pytest.mark.parametrize("raw,needle", [
    ({}, "expected a JSON object"), ([], "non-empty list"), ({"lr": 3}, "must be an object"),
    ({"lr": {"min": 1}}, "numeric 'min' and 'max'"), ({"lr": {"min": 0, "max": 1, "scaling": "log"}}, "min > 0"),
    ({"lr": {"min": 1, "max": 2, "scaling": "cubic"}}, "scaling"), ({"b": {"feasible_points": []}}, "non-empty"),
])
def test_bad_search_spaces(raw, needle):
    with pytest.raises(UsageError, match=needle):
        parse_search_space(raw)


def test_builtin_search_spaces_parse():
    from optbench.plugins.registry import entry_points, load_submission

    for name in entry_points("submissions"):
        space = load_submission(name).obj.search_space()
        assert space is not None, f"{name} ships no search space"
        parsed = parse_search_space(space, source=name)
        assert parsed.dims or parsed.fixed
