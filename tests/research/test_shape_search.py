"""Schedule-shape search: Halton shapes inside the family's ranges, the ranking takes each shape's best learning
rate (median over seeds, a divergence worst), and the command runs real trials whose schedules span the steps."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.recipes.shapes import SHAPE_SPACE, rank_shapes, sample_shapes
from optbench.schedules import from_hparams


def test_sampled_shapes_lie_in_the_family_and_depend_on_the_seed():
    shapes = sample_shapes(16, seed=3)
    assert shapes == sample_shapes(16, seed=3) and shapes != sample_shapes(16, seed=4)
    for shape in shapes:
        assert shape["schedule"] == "poly"
        for key, (low, high, _) in SHAPE_SPACE.items():
            assert low <= shape[key] <= high, (key, shape)
        from_hparams(shape, total_steps=100)  # every sampled shape is a valid schedule
    powers = sorted(s["decay_power"] for s in shapes)
    assert powers[0] < 0.6 and powers[-1] > 2.0  # spread over the range
    assert 0.6 < powers[8] < 1.6  # log scaling: the median near the geometric middle 1, not the arithmetic 2.1


def test_ranking_takes_the_best_lr_per_shape_and_counts_divergence_as_worst():
    a, b = {"schedule": "poly", "decay_power": 1.0}, {"schedule": "cosine"}
    results = [(a, 0.01, 0.3), (a, 0.01, 0.35), (a, 0.01, 0.9), (a, 0.03, 0.2), (a, 0.03, math.nan),
               (b, 0.01, 0.25), (b, 0.03, 0.9)]
    ranked = rank_shapes(results, goal="min")
    assert [r.shape for r in ranked] == [b, a]
    assert ranked[0].best_lr == 0.01 and ranked[0].score == 0.25
    assert ranked[1].by_lr == {0.01: 0.35, 0.03: math.inf} and ranked[1].best_lr == 0.01  # medians; NaN is inf
    assert [r.shape for r in rank_shapes(results, goal="max")][0] == b  # 0.9 is best when larger is better


def test_shape_search_runs_trials_over_schedules_of_the_given_length(tmp_path):
    out, res = tmp_path / "out", tmp_path / "results"
    r = CliRunner().invoke(main, ["shape-search", "-w", "linreg", "-s", "sgd", "--shapes", "1", "--lrs", "0.01",
                                  "--steps", "100", "--results-dir", str(res), "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    table = (out / "shapes.md").read_text()
    assert table.count("\n| ") == 1 + 4  # header + 1 sampled + 3 reference shapes
    assert "| 1 | " in table and "wsd warmup_frac=0.05" in table
    assert (out / "shapes.png").read_bytes()[:4] == b"\x89PNG"
    files = list(res.rglob("*.parquet"))
    assert len(files) == 4
    for f in files:
        df = pd.read_parquet(f)
        assert df["step"].iloc[-1] == 100 and df["submission"].iloc[0] == "sgd_shapes"
        if '"schedule": "wsd"' in df["hparams"].iloc[0]:
            assert df["learning_rate"].iloc[-1] == pytest.approx(0.0)  # the cooldown ends at step 100, not 1500


@pytest.mark.parametrize(("args", "message"), [(["-s", "dog"], "takes no schedule hyperparameter"),
                                               (["--lrs", "0"], "--lrs must be a finite number > 0"),
                                               (["--steps", "0"], "--steps must be an integer >= 1"),
                                               (["--size", "huge"], "has no size 'huge'")])
def test_bad_searches_fail_in_one_line(tmp_path, args, message):
    r = CliRunner().invoke(main, ["shape-search", "--results-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"),
                                  *args])
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output
