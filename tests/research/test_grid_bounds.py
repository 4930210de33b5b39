"""Bounds shown as bounds (issue 21, item 4): a critical batch size at the smallest batch size that reached prints
as "<= B" (and ``bound: "upper"`` in the JSON); a best learning rate at the edge of its grid is flagged, and the
grid is extended one step at a time on that side until the best is interior."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from optbench.cli import main
from optbench.recipes.cbs import CbsRun, cbs_json, cbs_markdown, summarize_cbs
from optbench.recipes.common import extend_grid, extend_until_interior, grid_edge


def _run(b: int, lr: float, steps: int | None, seed: int = 0) -> CbsRun:
    return CbsRun(batch_size=b, lr=lr, seed=seed, steps_to_target=steps,
                  examples_to_target=None if steps is None else steps * b, outcome="reached" if steps else "missed")


def test_critical_batch_at_the_smallest_batch_prints_as_an_upper_bound():
    # 16 needs as many steps as 8: scaling already stopped; the sweep cannot tell where below 8 it did.
    s = summarize_cbs([_run(8, 0.01, 100), _run(16, 0.01, 100), _run(32, 0.01, 100)])
    assert s.critical_batch_size == 8 and s.bound == "upper" and s.critical_text() == "<= 8"
    assert "Critical batch size: **<= 8** (an upper bound" in cbs_markdown(s)
    assert cbs_json(s)["bound"] == "upper" and cbs_json(s)["critical_text"] == "<= 8"
    every = summarize_cbs([_run(8, 0.01, 100), _run(16, 0.01, 50), _run(32, 0.01, 25)])
    assert every.critical_text() == ">= 32" and every.bound == "lower"
    inside = summarize_cbs([_run(8, 0.01, 100), _run(16, 0.01, 50), _run(32, 0.01, 100)])
    assert inside.critical_text() == "16" and inside.bound == "value"


def test_table_states_each_intervals_coverage_and_flags_an_edge_lr():
    runs = [_run(8, lr, steps, seed) for seed in range(3) for lr, steps in ((0.01, 100 + seed), (0.03, 80 + seed))]
    s = summarize_cbs(runs)
    assert s.rows[0].lr_edge == "high" and s.rows[0].steps_level == 0.75 and s.rows[0].seeds == 3
    row = cbs_markdown(s).splitlines()[2]
    assert "| 0.03 (high edge) |" in row and "| 80-82 (75%, n=3) |" in row
    assert cbs_json(s)["rows"][0]["interval_level"] == 0.75


def test_grid_edge_and_one_step_extension_are_pure():
    grid = (0.001, 0.01)
    assert grid_edge(grid, {0.001: 5.0, 0.01: 3.0}) == "high"
    assert extend_grid(grid, {0.001: 5.0, 0.01: 3.0}) == (0.001, 0.01, 0.1)  # the grid's own spacing, x10
    assert extend_grid(grid, {0.001: 2.0, 0.01: 3.0}) == (0.0001, 0.001, 0.01)
    assert extend_grid((0.001, 0.01, 0.1), {0.001: 5.0, 0.01: 3.0, 0.1: 4.0}) is None  # interior
    assert extend_grid(grid, {0.001: math.inf, 0.01: math.inf}) is None  # nothing reached: no side to move to
    assert extend_grid((0.01,), {0.01: 3.0}) is None  # one value is not a sweep


def test_extension_moves_an_edge_optimum_inward_and_stops_when_interior():
    def response(lr: float) -> float:  # steps to target, smallest at lr = 0.03 (outside the starting grid)
        return 100.0 * (1.0 + math.log(lr / 0.03) ** 2)

    calls = []

    def run_round(grids):
        calls.append({k: tuple(v) for k, v in grids.items()})
        return {k: {lr: response(lr) for lr in v} for k, v in grids.items()}

    done = extend_until_interior({"sgd": (0.001, 0.003)}, run_round, max_extensions=5)
    assert done.grids["sgd"] == (0.001, 0.003, 0.009, 0.027, 0.081) and done.rounds == 3 and len(calls) == 4
    assert done.edges == {"sgd": None} and done.added["sgd"] == (0.009, 0.027, 0.081)
    capped = extend_until_interior({"sgd": (0.001, 0.003)}, run_round, max_extensions=1)
    assert capped.edges == {"sgd": "high"} and "high edge" in capped.notes()[0]
    off = extend_until_interior({"sgd": (0.001, 0.003)}, run_round, enabled=False)
    assert off.rounds == 0 and off.to_json()["enabled"] is False and "--no-extend-grid" in off.notes()[0]


def test_lr_sweep_extends_its_grid_through_the_engine(tmp_path):
    # SGD on linreg tiny reaches 0.5 fastest near lr 0.003-0.01: a grid of 0.001, 0.003 has its best at the high edge.
    args = ["lr-sweep", "-w", "linreg", "-s", "sgd", "--lrs", "0.001,0.003", "--batch-size", "8", "--seed", "0",
            "--target", "0.5", "--max-steps", "60", "--eval-every", "2", "-o", "schedule=constant",
            "--device", "cpu", "--results-dir", str(tmp_path / "res"), "--out", str(tmp_path / "out")]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "out" / "lr-sweep.json").read_text())["grid_extension"]
    assert record["enabled"] and record["rounds"] >= 1 and record["added"]["sgd"][0] == 0.009
    assert record["edges"] == {}  # interior at the end
    assert "| 0.009 |" in (tmp_path / "out" / "lr-sweep.md").read_text()
    assert "cannot reach p <= 0.05" not in r.output  # one submission: nothing to compare


def test_a_tied_best_is_a_plateau_not_an_edge():
    assert grid_edge((0.001, 0.003), {0.001: 10.0, 0.003: 10.0}) is None
    assert grid_edge((0.001, 0.003, 0.01), {0.001: 9.0, 0.003: 9.0, 0.01: 12.0}) is None


def test_shape_search_flags_a_best_lr_at_the_edge_for_either_goal():
    from optbench.recipes.shapes import rank_shapes, shapes_markdown

    shape = {"schedule": "constant"}
    results = [(shape, 0.01, 0.5), (shape, 0.03, 0.4), (shape, 0.1, 0.3)]
    low_is_good = rank_shapes(results, goal="min")[0]
    assert low_is_good.best_lr == 0.1 and low_is_good.lr_edge == "high"
    assert "| 0.1 (high edge) |" in shapes_markdown([low_is_good], metric="loss")
    assert rank_shapes(results, goal="max")[0].lr_edge == "low"  # accuracy-like: 0.01 is best
    assert rank_shapes([*results, (shape, 0.3, 0.35)], goal="min")[0].lr_edge is None
