"""``optbench scaling``: the analysis on generated ladders (best lr per size, intervals, speedups, edges, JSON) and
the recipe end to end on the tiny CPU ladder (two submissions, re-run trains nothing, a speedup table with
intervals)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from optbench.recipes.scaling import ScalingRun, summarize_scaling
from optbench.recipes.scaling_tables import scaling_json, scaling_markdown

SIZES = {"s": (1e5, 1e12), "m": (4e5, 1.6e13), "l": (1.6e6, 2.56e14)}  # model -> (params, model FLOPs)
A, B = 30.0, 0.08


def _ladder(shift: float = 2.0, *, seeds: int = 4, noise: float = 0.01) -> list[ScalingRun]:
    """adamw on L = A C^-B; lion reaches at C what adamw reaches at ``shift`` C. The best lr falls with size
    (0.01 at s, 0.003 at m, 0.001 at l) on a grid of three; other lrs are 5% worse."""
    rng = np.random.default_rng(0)
    runs = []
    for sub, k in (("adamw", 1.0), ("lion", shift)):
        for (model, (n, c)), best in zip(SIZES.items(), (0.01, 0.003, 0.001)):
            for lr in (0.001, 0.003, 0.01):
                for seed in range(seeds):
                    loss = A * (k * c) ** -B * (1.0 if lr == best else 1.05) * math.exp(noise * rng.standard_normal())
                    runs.append(ScalingRun(model=model, submission=sub, lr=lr, seed=seed, final_loss=loss, compute=c,
                                           tokens=c / (6 * n), params=n, tokens_to_target=math.inf,
                                           flops_to_target=math.inf, outcome="missed"))
    return runs


def test_table_has_the_best_lr_per_size_the_reference_first_and_speedups_with_intervals():
    s = summarize_scaling(_ladder(), reference="adamw", models=("s", "m", "l"), n_boot=300)
    assert [(r.model, r.submission) for r in s.rows] == [(m, sub) for m in "sml" for sub in ("adamw", "lion")]
    assert [r.best_lr for r in s.rows if r.submission == "adamw"] == [0.01, 0.003, 0.001]
    assert [r.lr_edge for r in s.rows if r.submission == "adamw"] == ["high", None, "low"]
    for r in s.rows:
        assert r.loss.low < r.loss.value < r.loss.high and r.runs == 12
        if r.submission == "adamw":
            assert r.speedup is None
        else:
            assert r.speedup.k.low < r.speedup.k.value < r.speedup.k.high
            assert r.speedup.k.value == pytest.approx(2.0, rel=0.3)
    assert [r.speedup.extrapolated for r in s.rows if r.speedup] == [False, False, True]  # l needs 2x the top C
    assert s.loss_fits["adamw"].b.covers(B) and s.lr_fits["adamw"].b.value == pytest.approx(0.5 * math.log10(10) /
                                                                                           math.log10(4), rel=0.2)


def test_markdown_and_json_carry_the_intervals_and_flags():
    s = summarize_scaling(_ladder(), reference="adamw", n_boot=100)
    md = scaling_markdown(s)
    assert "| s | 1e+05 | adamw | 0.01 (high edge) |" in md and "| reference |" in md and "| yes |" in md
    assert "adamw: L(C) = a C^-b, a = " in md and "lion: lr*(N) = c N^-d" in md
    data = json.loads(json.dumps(scaling_json(s), allow_nan=False))
    lion = [r for r in data["rows"] if r["submission"] == "lion"]
    assert all(r["speedup"]["low"] < r["speedup"]["value"] < r["speedup"]["high"] for r in lion)
    assert [r["speedup"]["extrapolated"] for r in lion] == [False, False, True] and lion[0]["missed"]


def test_diverged_and_failed_trials_are_never_best_and_missing_sizes_leave_no_fit():
    runs = _ladder(seeds=2)
    runs = [r if not (r.submission == "lion" and r.lr == 0.01) else
            ScalingRun(**{**r.__dict__, "final_loss": math.inf, "outcome": "diverged"}) for r in runs]
    s = summarize_scaling(runs, reference="adamw", n_boot=50)
    assert all(r.best_lr != 0.01 for r in s.rows if r.submission == "lion")
    only = summarize_scaling([r for r in runs if r.model == "s"], reference="adamw", n_boot=50)
    assert only.loss_fits["adamw"] is None and all(r.speedup is None for r in only.rows)
    assert "none: fewer than two sizes" in scaling_markdown(only)
