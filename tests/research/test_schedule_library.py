"""The schedule library: every schedule's multiplier at known steps (table-driven, hand-computed values), chosen
through hyperparameters exactly as a submission does, and bad values as one-line errors."""

from __future__ import annotations

import math

import pytest

from optbench.errors import UsageError
from optbench.schedules import KEY_DEFAULTS, SCHEDULES, TABLE, ScheduleError, from_hparams, values

R2 = math.sqrt(2.0)

# (hyperparameters, total_steps, {step: multiplier}); every value worked out by hand from the formula.
CASES = [
    ({"schedule": "constant"}, 100, {1: 1.0, 100: 1.0, 10**6: 1.0}),
    ({"schedule": "constant", "warmup_frac": 0.1}, 100, {1: 0.1, 5: 0.5, 10: 1.0, 11: 1.0}),
    ({"schedule": "cosine", "warmup_frac": 0.1, "decay_floor": 0.1}, 110, {1: 1 / 11, 11: 1.0, 60: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 49 / 99)), 110: 0.1}),
    ({"schedule": "linear", "warmup_frac": 0.04}, 100, {2: 0.5, 4: 1.0, 52: 0.5, 100: 0.0, 200: 0.0}),
    # WSD, 100 steps, 10 warmup, cooldown 20 (steps 81..100): linear from 1 to the floor 0.
    ({"schedule": "wsd", "warmup_frac": 0.1, "cooldown_frac": 0.2}, 100,
     {5: 0.5, 10: 1.0, 50: 1.0, 80: 1.0, 85: 0.75, 90: 0.5, 100: 0.0, 150: 0.0}),
    ({"schedule": "wsd", "cooldown_frac": 0.2, "decay_floor": 0.2}, 100, {80: 1.0, 90: 0.2 + 0.8 * 0.5, 100: 0.2}),
    ({"schedule": "wsd", "cooldown_frac": 0.5, "cooldown_shape": "1-sqrt"}, 100,
     {50: 1.0, 51: 1 - math.sqrt(0.02), 75: 1 - math.sqrt(0.5), 100: 0.0}),
    ({"schedule": "wsd", "cooldown_frac": 0.5, "cooldown_shape": "cosine"}, 100, {50: 1.0, 75: 0.5, 100: 0.0}),
    # 1/sqrt(t): tau = warmup = 4; no cooldown by default (horizon-free).
    ({"schedule": "invsqrt", "warmup_frac": 0.04}, 100, {2: 0.5, 4: 1.0, 16: 0.5, 64: 0.25, 400: 0.1, 10**4: 0.02}),
    ({"schedule": "invsqrt"}, 100, {1: 1.0, 4: 0.5, 100: 0.1}),
    # with a cooldown over the last half: r_c = sqrt(1/50), then linearly to min(floor, r_c) = 0.
    ({"schedule": "invsqrt", "cooldown_frac": 0.5}, 100, {50: math.sqrt(1 / 50), 75: 0.5 * math.sqrt(1 / 50), 100: 0.0}),
    ({"schedule": "invsqrt", "cooldown_frac": 0.5, "decay_floor": 0.05}, 100,
     {75: 0.05 + 0.5 * (math.sqrt(1 / 50) - 0.05), 100: 0.05, 120: 0.05}),
    # a floor above the value reached never raises the rate: the cooldown is flat.
    ({"schedule": "invsqrt", "cooldown_frac": 0.5, "decay_floor": 0.5}, 100, {75: math.sqrt(1 / 50), 100: math.sqrt(1 / 50)}),
    # step decay: milestones at 50 and 75 of 100; steps 1..50 at 1, 51..75 at 1/2, then 1/4.
    ({"schedule": "step"}, 100, {1: 1.0, 50: 1.0, 51: 0.5, 75: 0.5, 76: 0.25, 1000: 0.25}),
    ({"schedule": "step", "decay_factor": 0.1, "decay_milestones": [0.3, 0.6, 0.9], "warmup_frac": 0.1}, 100,
     {5: 0.5, 30: 1.0, 31: 0.1, 61: 0.01, 91: 0.001}),
    ({"schedule": "step", "decay_milestones": 0.5}, 10, {5: 1.0, 6: 0.5}),
    # the shape family: warmup 10, stable to 40, then (1 - s)^2 down to 0.1 at 100.
    ({"schedule": "poly", "warmup_frac": 0.1, "decay_start_frac": 0.4, "decay_power": 2.0, "decay_floor": 0.1}, 100,
     {5: 0.5, 40: 1.0, 70: 0.1 + 0.9 * 0.25, 100: 0.1, 101: 0.1}),
    ({"schedule": "poly", "decay_start_frac": 0.0, "decay_power": 0.5}, 100, {1: math.sqrt(0.99), 75: 0.5, 100: 0.0}),
    # decay_start before the end of warmup: the decay starts when warmup ends.
    ({"schedule": "poly", "warmup_frac": 0.5, "decay_start_frac": 0.1}, 100, {50: 1.0, 75: 0.5}),
]


@pytest.mark.parametrize(("hparams", "total", "expected"), CASES, ids=[f"{c[0]['schedule']}-{i}" for i, c in enumerate(CASES)])
def test_values_at_known_steps(hparams, total, expected):
    schedule = from_hparams(hparams, total_steps=total)
    steps = sorted(expected)
    assert values(schedule, steps) == pytest.approx([expected[t] for t in steps], abs=1e-12)


def test_every_schedule_in_the_table_is_tested_and_its_keys_exist():
    assert set(SCHEDULES) == {c[0]["schedule"] for c in CASES}
    for kind in TABLE:
        assert set(kind.keys) <= set(KEY_DEFAULTS), kind.name


def test_the_old_three_are_unchanged_by_the_new_keys():
    # Keys a schedule does not read change nothing (old results keep their meaning).
    extra = {"cooldown_frac": 0.9, "decay_power": 7.0, "decay_milestones": [0.1]}
    for name in ("constant", "cosine", "linear"):
        hp = {"schedule": name, "warmup_frac": 0.05, "decay_floor": 0.1}
        assert from_hparams(hp, total_steps=200) == from_hparams({**hp, **extra}, total_steps=200)


def test_none_means_the_schedules_own_default():
    # A submission that accepts every schedule key records None for those it was not given.
    nones = {k: None for k in KEY_DEFAULTS}
    assert from_hparams({**nones, "schedule": "invsqrt"}, total_steps=100) == from_hparams({"schedule": "invsqrt"}, total_steps=100)
    assert from_hparams({**nones, "schedule": "wsd"}, total_steps=100)(90) == pytest.approx(0.5)  # cooldown 0.2
    assert from_hparams(nones, total_steps=100)(7) == 1.0  # constant


@pytest.mark.parametrize(("hparams", "message"), [
    ({"schedule": "wsd", "cooldown_frac": 1.5}, r"cooldown_frac must be in \[0, 1\], got 1.5"),
    ({"schedule": "wsd", "cooldown_shape": "sqrt"}, r"unknown cooldown_shape 'sqrt'; choose one of linear, 1-sqrt, cosine"),
    ({"schedule": "step", "decay_milestones": [0.7, 0.3]}, r"decay_milestones must increase strictly"),
    ({"schedule": "step", "decay_milestones": []}, r"decay_milestones must be a list"),
    ({"schedule": "step", "decay_factor": "half"}, r"decay_factor must be a number, got 'half'"),
    ({"schedule": "poly", "decay_power": float("nan")}, r"decay_power must be in"),
    ({"schedule": "cosine", "warmup_frac": True}, r"warmup_frac must be in"),
    ({"schedule": "zigzag"}, r"unknown schedule 'zigzag'; choose one of constant, cosine, linear, wsd, invsqrt, step, poly$"),
])
def test_bad_values_are_one_line_usage_errors(hparams, message):
    with pytest.raises(ScheduleError, match=message) as info:
        from_hparams(hparams, total_steps=100)
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
