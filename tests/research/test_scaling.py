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


def test_lr_scores_feed_the_grid_extension_per_size_and_submission():
    from optbench.recipes.common import extend_grid
    from optbench.recipes.scaling import lr_scores

    scores = lr_scores(_ladder(noise=0.0))
    assert set(scores) == {(m, s) for m in SIZES for s in ("adamw", "lion")}
    grid = (0.001, 0.003, 0.01)
    assert extend_grid(grid, scores[("s", "adamw")]) == (0.001, 0.003, 0.01, 0.0333333)  # best at the high edge
    assert extend_grid(grid, scores[("m", "lion")]) is None  # interior
    assert extend_grid(grid, scores[("l", "adamw")]) == (0.000333333, 0.001, 0.003, 0.01)


def test_diverged_and_failed_trials_are_never_best_and_missing_sizes_leave_no_fit():
    runs = _ladder(seeds=2)
    runs = [r if not (r.submission == "lion" and r.lr == 0.01) else
            ScalingRun(**{**r.__dict__, "final_loss": math.inf, "outcome": "diverged"}) for r in runs]
    s = summarize_scaling(runs, reference="adamw", n_boot=50)
    assert all(r.best_lr != 0.01 for r in s.rows if r.submission == "lion")
    only = summarize_scaling([r for r in runs if r.model == "s"], reference="adamw", n_boot=50)
    assert only.loss_fits["adamw"] is None and all(r.speedup is None for r in only.rows)
    assert "none: fewer than two sizes" in scaling_markdown(only)


# ------------------------------------------------------------------------------------------------ the recipe

import pyarrow.parquet as pq  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from optbench.cli import main  # noqa: E402
from optbench.engine.prepared import TrialConfig  # noqa: E402
from optbench.recipes.scaling import ScalingSpec, initial_grids, plan_scaling  # noqa: E402
from optbench.sweep.engine import prepare_plan  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory):
    from optbench.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, n_tokens=40_000)
    return root


def test_the_plan_is_one_full_budget_trial_per_size_submission_lr_and_seed_each_seed_its_study(data_dir, tmp_path):
    spec = ScalingSpec(submissions=("lion",), reference="adamw", lr_factors=(0.5, 2.0), seeds=(0, 1),
                       models="t1,t2")
    grids = initial_grids(spec, ("t1", "t2"), {"adamw": 0.01, "lion": 0.003})
    assert grids[("t1", "adamw")] == (0.005, 0.02) and grids[("t2", "lion")] == (0.0015, 0.006)
    plan = plan_scaling(spec, TrialConfig(device="cpu", data_dir=data_dir, tokens="2048"), grids)
    assert len(plan) == 2 * 2 * 2 * 2
    assert {(p.config.study, p.config.seed) for p in plan} == {(f"scaling-{m}-seed{s}", s) for m in ("t1", "t2")
                                                               for s in (0, 1)}
    assert all(p.config.full_budget and p.config.study_kind == "scaling" and p.config.model == p.tags["model"]
               and p.config.trial == f"lr{p.tags['lr']:g}" and p.config.hparams["lr"] == p.tags["lr"] for p in plan)
    preps = prepare_plan(plan, tmp_path / "results")  # every trial validates before any trains
    assert len({p.identity() for p in preps}) == len(plan)
    assert {p.size.name for p in preps} == {"tiny+t1", "tiny+t2"} and {p.budget.max_steps for p in preps} == {2}


def test_a_ladder_of_one_size_or_a_bad_model_stops_in_one_line(data_dir, tmp_path):
    for args, says in ((["--models", "t1"], "at least two model sizes"),
                       (["--models", "t1,nosuch"], "nosuch"),
                       (["--models", ""], "at least two model sizes"),  # typed empty: not the default ladder
                       (["--models", "[bold],$x$"], "[bold]")):
        r = CliRunner().invoke(main, ["scaling", *args, "--tokens", "2048", "--data-dir", str(data_dir),
                                      "--device", "cpu", "--results-dir", str(tmp_path / "r")])
        assert r.exit_code == 2 and r.output.startswith("error: ") and says in r.output, r.output
    assert not list(tmp_path.rglob("*.parquet"))


LADDER = ["scaling", "-s", "adamw", "-s", "lion", "--models", "t1,t2", "--lr-factors", "0.3,1", "--seed", "0",
          "--seed", "1", "--tokens", "2048", "--eval-every", "1000", "--device", "cpu", "--no-extend-grid"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_scaling_runs_the_tiny_ladder_end_to_end_and_a_rerun_trains_nothing(data_dir, tmp_path):
    """2 sizes x 2 submissions x 2 lrs x 2 seeds of 2 steps: the table has every row, lion's speedups have
    intervals, the JSON and plots are written, the report shows the section; the same command again records no new
    trial."""
    root = tmp_path / "results"
    args = [*LADDER, "--data-dir", str(data_dir), "--results-dir", str(root)]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    files = sorted(root.rglob("*.parquet"))
    assert len(files) == 16
    out = root / "recipes" / "scaling"
    data = json.loads((out / "scaling.json").read_text())
    assert [(r["model"], r["submission"]) for r in data["rows"]] == [("t1", "adamw"), ("t1", "lion"),
                                                                    ("t2", "adamw"), ("t2", "lion")]
    lion = [r for r in data["rows"] if r["submission"] == "lion"]
    assert all(r["speedup"]["low"] <= r["speedup"]["value"] <= r["speedup"]["high"] for r in lion)
    assert all(r["final_loss"]["low"] < r["final_loss"]["high"] and r["params"] > 0 for r in data["rows"])
    assert data["rows"][0]["model_flops"] < data["rows"][2]["model_flops"]
    assert data["grid_extension"]["enabled"] is False and (out / "scaling-loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "| t2 |" in (out / "scaling.md").read_text() and "| reference |" in (out / "scaling.md").read_text()
    assert {json.loads(pq.read_schema(f).metadata[b"optbench"])["study_kind"] for f in files} == {"scaling"}

    table = (out / "scaling.md").read_text()
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0 and "16 already recorded, 0 to run" in again.output, again.output
    assert sorted(root.rglob("*.parquet")) == files and (out / "scaling.md").read_text() == table

    report = CliRunner().invoke(main, ["report", "--results-dir", str(root), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Model-size scaling" in page and 'id="scaling"' in page


@pytest.mark.usefixtures("one_torch_thread")
def test_scaling_runs_one_step_per_trial_and_a_rerun_trains_nothing(data_dir, tmp_path):
    """The fast version of the end-to-end test: 2 sizes x 2 submissions x 1 lr x 1 seed, one step each."""
    args = ["scaling", "-s", "lion", "--models", "t1,t2", "--lrs", "0.003", "--seed", "0", "--tokens", "1024",
            "--eval-every", "1000", "--device", "cpu", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r")]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0 and "4 to run" in first.output, first.output
    data = json.loads((tmp_path / "r" / "recipes" / "scaling" / "scaling.json").read_text())
    assert [(r["model"], r["submission"], r["best_lr"]) for r in data["rows"]] == [
        ("t1", "adamw", 0.003), ("t1", "lion", 0.003), ("t2", "adamw", 0.003), ("t2", "lion", 0.003)]
    assert all(r["speedup"]["value"] > 0 for r in data["rows"] if r["submission"] == "lion")
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "4 already recorded, 0 to run" in again.output and len(list((tmp_path / "r").rglob("*.parquet"))) == 4

    from optbench.recipes.sections import scaling_section
    from optbench.store.reader import read_results

    loaded = read_results(tmp_path / "r")
    section = scaling_section(loaded, loaded.all_trials())  # the report's section, from the store alone
    assert section.title == "Model-size scaling" and section.table_html.count("<tr>") >= 4
    assert "reference" in section.table_html and "wikitext/tiny: adamw: L(C) = a C^-b" in section.note
    assert [p.name for p in section.plots] == ["scaling-loss-wikitext-tiny", "scaling-lr-wikitext-tiny"]


def test_one_size_at_two_budgets_is_two_points_and_diverged_trials_do_not_move_the_compute():
    from dataclasses import replace as but

    runs = [r for r in _ladder(seeds=2) if r.model == "s"]
    longer = [but(r, budget=2, compute=r.compute * 4, final_loss=r.final_loss * 4**-B) for r in runs]
    stopped = [but(runs[0], lr=0.001, seed=k, outcome="diverged", final_loss=math.inf, compute=1.0)
               for k in range(5, 15)]  # more than half the point's trials: their compute would be the median
    s = summarize_scaling([*runs, *longer, *stopped], reference="adamw", n_boot=50)
    assert [(r.model, r.submission, r.compute) for r in s.rows] == [
        ("s", "adamw", 1e12), ("s", "lion", 1e12), ("s", "adamw", 4e12), ("s", "lion", 4e12)]
    assert s.loss_fits["adamw"].points == 2 and s.loss_fits["adamw"].b.value == pytest.approx(B, rel=0.2)
