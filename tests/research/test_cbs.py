"""Critical batch size: the table picks each batch size's best learning rate, the critical batch size follows its
stated definition, McCandlish's fit recovers known constants, and ``optbench cbs`` runs real trials and writes its
table, trial list and plot."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.recipes.cbs import CbsRun, fit_steps_model, summarize_cbs
from optbench.store.reader import read_results


def _runs(table: dict[tuple[int, float], list[int | None]]) -> list[CbsRun]:
    return [CbsRun(batch_size=b, lr=lr, seed=i, steps_to_target=s, examples_to_target=None if s is None else s * b,
                   outcome="reached" if s else "missed")
            for (b, lr), steps in table.items() for i, s in enumerate(steps)]


def test_best_lr_per_batch_size_and_the_critical_batch_size():
    runs = _runs({
        (8, 0.01): [None, None], (8, 0.003): [1000, 1100],  # median 1050: the base B0 = 8
        (16, 0.01): [520, 540], (16, 0.03): [None, 500],  # 530 (a miss makes 0.03's median inf)
        (32, 0.01): [300, 320],  # 310 vs linear 262.5: +18%, within 20%
        (64, 0.03): [170, 180],  # 175 vs 131.25: +33%: past the critical batch size
        (128, 0.03): [70, 70],  # back under 120% of linear, but the run of good sizes already ended
    })
    s = summarize_cbs(runs, max_overhead=0.2)
    assert [(r.batch_size, r.best_lr, r.steps) for r in s.rows] == [
        (8, 0.003, 1050.0), (16, 0.01, 530.0), (32, 0.01, 310.0), (64, 0.03, 175.0), (128, 0.03, 70.0)]
    assert [r.linear for r in s.rows] == pytest.approx([1050, 525, 262.5, 131.25, 65.625])
    assert s.rows[2].overhead == pytest.approx(310 / 262.5 - 1)
    assert s.critical_batch_size == 32
    assert summarize_cbs(runs, max_overhead=0.35).critical_batch_size == 128
    assert s.rows[0].reached == 2 and s.rows[0].runs == 2 and s.rows[0].examples == pytest.approx(1050 * 8)


def test_sizes_that_never_reach_are_listed_but_do_not_set_the_base():
    s = summarize_cbs(_runs({(4, 0.1): [None], (8, 0.1): [800], (16, 0.1): [None]}))
    assert s.rows[0].best_lr is None and s.rows[0].steps == math.inf
    assert s.rows[1].linear == 800 and s.critical_batch_size == 8  # 16 missed: the run of good sizes ends at 8
    assert summarize_cbs(_runs({(4, 0.1): [None]})).critical_batch_size is None


def test_fit_recovers_s_min_and_b_noise():
    s_min, b_noise = 200.0, 48.0
    pts = [(b, s_min * (1 + b_noise / b)) for b in (8, 16, 32, 64, 128)] + [(256, math.inf)]
    assert fit_steps_model(pts) == pytest.approx((s_min, b_noise))
    assert all(math.isnan(x) for x in fit_steps_model([(8, 100.0)]))


def test_cbs_runs_real_trials_and_writes_table_trials_and_plot(tmp_path):
    out = tmp_path / "cbs"
    r = CliRunner().invoke(main, ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "32,64", "--lrs", "0.01",
                                  "--target", "0.3", "--eval-every", "10", "--max-steps", "400", "--max-seconds", "1e6",
                                  "--seed", "0",
                                  "-o", "schedule=constant", "--results-dir", str(tmp_path / "results"),
                                  "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    table = (out / "cbs.md").read_text()
    assert "| 32 | 0.01 |" in table and "| 64 | 0.01 |" in table and "Critical batch size: **" in table
    lines = (out / "cbs.csv").read_text().splitlines()
    assert lines[0] == "batch_size,lr,seed,outcome,steps_to_target,examples_to_target" and len(lines) == 3
    assert (out / "cbs.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "results").rglob("*.parquet"))) == 2
    trials = read_results(tmp_path / "results").trials
    assert sorted(trials["base_batch_size"]) == [32, 64] and set(trials["max_seconds"]) == {1e6}


@pytest.mark.parametrize("args", [["--batch-sizes", "0,8"], ["--lrs", "-1"], ["--lrs", "x"], ["--overhead", "-0.1"],
                                  ["--batch-sizes", "8", "-o", "nosuchkey=1"], ["--max-seconds", "nan"],
                                  ["--max-seconds", "-1"], ["--max-seconds", "9223372036854775808"],
                                  ["--max-seconds", ""]])
def test_bad_sweeps_fail_in_one_line_before_any_trial(tmp_path, args):
    r = CliRunner().invoke(main, ["cbs", "--results-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert not list(tmp_path.rglob("*.parquet"))


def test_sensitivity_table_counts_the_good_basin():
    from optbench.recipes.cbs import sensitivity_markdown

    sweeps = {"a": _runs({(32, 0.01): [100, 120], (32, 0.03): [140], (32, 0.1): [None]}),
              "b": _runs({(32, 0.01): [300], (32, 0.03): [100], (32, 0.1): [200]})}
    lines = sensitivity_markdown(sweeps, within=1.5).splitlines()
    assert lines[2] == "| 0.01 | 110 | 300 |" and lines[4] == "| 0.1 | missed | 200 |"
    assert lines[5] == "| best | 110 | 100 |"
    assert lines[6] == "| lrs within 1.5x of best | 2 | 1 |"  # a: 110, 140 <= 165; b: only 100 <= 150
    assert lines[7] == "| best lr at grid edge | low | no |"


def test_lr_sweep_runs_each_submission_at_each_lr(tmp_path):
    r = CliRunner().invoke(main, ["lr-sweep", "-w", "linreg", "-s", "sgd", "-s", "adamw", "--lrs", "0.003,0.01",
                                  "--target", "0.5", "--max-steps", "200", "--eval-every", "10",
                                  "--seed", "0", "--no-extend-grid", "--results-dir", str(tmp_path / "res"), "--out", str(tmp_path / "out")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = (tmp_path / "out" / "lr-sweep.md").read_text()
    assert "| lr | sgd | adamw |" in text and "| 0.003 |" in text and "| 0.01 |" in text
    assert len(list((tmp_path / "res").rglob("*.parquet"))) == 4
    bad = CliRunner().invoke(main, ["lr-sweep", "-s", "sgd", "-s", "nosuch", "--results-dir", str(tmp_path / "r2"),
                                    "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "nosuch" in bad.output  # checked before sgd's trials run
    assert not list((tmp_path / "r2").rglob("*.parquet"))
