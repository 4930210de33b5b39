"""The report's research sections: batch-size sweeps and curvature diagnostics, from real trials on linreg tiny, and
the grouping rules on written records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.recipes.sections import batch_sweeps, research_sections
from optbench.recipes.cbs import summarize_cbs
from optbench.store.reader import read_results
from tests.test_report import _trial


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    return page[start:page.index("<h2>", start + 4)]


def _rows(section: str, table_id: str) -> list[list[str]]:
    table = section[section.index(f'id="{table_id}"'):section.index("</table>")]
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table) if "<td" in tr]


@pytest.fixture(scope="module")
def research_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cbs sweep of SGD (3 batch sizes x 2 lrs x 2 seeds) and two diagnosed trials, on linreg tiny."""
    root = tmp_path_factory.mktemp("research")
    res, out = root / "results", root / "cbs"
    _invoke("cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "16,32,64", "--lrs", "0.01,0.03", "--seed", "0",
            "--seed", "1", "-o", "schedule=constant", "--max-steps", "1500", "--eval-every", "10", "--no-extend-grid",
            "--results-dir", str(res), "--out", str(out))
    for opt in ("adamw", "sgd"):
        _invoke("run", "-w", "linreg", "-s", opt, "--diagnostics", "--max-steps", "100", "--eval-every", "50",
                "--results-dir", str(res), "--quiet")
    return res, (out / "cbs.md").read_text()


def test_report_shows_the_sweep_that_cbs_printed(research_results: tuple[Path, str], tmp_path: Path) -> None:
    res, markdown = research_results
    _invoke("report", "--results-dir", str(res), "--out", str(tmp_path / "r"))
    page = (tmp_path / "r" / "index.html").read_text()
    section = _section(page, "Batch-size sweeps")
    rows = _rows(section, "cbs")
    assert [r[2] for r in rows] == ["16", "32", "64"]
    assert all(r[:2] == ["linreg/tiny", "sgd"] for r in rows)  # the diagnosed sgd run (cosine) is another sweep
    # The same numbers as the cbs command's own table: batch size, best lr, median steps, interval.
    printed = [line.split("|")[1:5] for line in markdown.splitlines() if re.match(r"\| \d", line)]
    assert [[c.strip() for c in p] for p in printed] == [r[2:6] for r in rows]
    critical = re.search(r"Critical batch size: \*\*(?:[<>]= )?(\w+)\*\*", markdown).group(1)
    assert [r[2] for r in rows if r[-1].startswith("yes")] == ([] if critical == "none" else [critical])
    assert (tmp_path / "r" / "cbs-linreg-tiny-sgd.png").stat().st_size > 0
    assert "Zhang et al. 2024" in section


def test_report_plots_the_diagnosed_trials_only(research_results: tuple[Path, str], tmp_path: Path) -> None:
    res, _ = research_results
    build = tmp_path / "r"
    _invoke("report", "--results-dir", str(res), "--out", str(build))
    section = _section((build / "index.html").read_text(), "Curvature and noise")
    rows = _rows(section, "diagnostics")
    assert sorted(r[1] for r in rows) == ["adamw", "sgd"]  # not the 12 sweep trials, which ran without
    loaded = read_results(res)
    evals = loaded.evals_of(loaded.trials[loaded.trials["diagnostics"]]["run_id"].tolist())
    for r in rows:
        mine = evals[evals["submission"] == r[1]].sort_values("step")
        last = json.loads(mine["metrics_json"].iloc[-1])
        assert float(r[6]) == pytest.approx(last["sharpness"], rel=1e-3)  # last sharpness, from metrics_json
        assert float(r[7]) == pytest.approx(last["eos_threshold"], rel=1e-3)  # 2/lr at that evaluation
    assert (build / "diagnostics-linreg-tiny.png").stat().st_size > 0


def test_no_section_without_its_data(tmp_path: Path) -> None:
    for seed in range(2):
        _trial(tmp_path, workload="linreg", sub="adamw", study=f"s{seed}", seed=seed, rate=0.5, lr=0.01)
    loaded = read_results(tmp_path)
    assert research_sections(loaded, loaded.all_trials()) == []
    _invoke("report", "--results-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Batch-size sweeps" not in page and "Curvature and noise" not in page


def _sweep_trial(root: Path, *, batch: int, lr: float, seed: int, steps: int | None, **hparams: object) -> None:
    """A written trial at ``batch`` that reached in ``steps`` (None: missed), with the other hparams given."""
    fixed = "-".join(f"{k}{v}" for k, v in sorted(hparams.items()))
    _trial(root, workload="linreg", sub="sgd", study=f"b{batch}-lr{lr}-{fixed}", seed=seed, rate=0.5, lr=lr,
           base_batch_size=batch, hparams=json.dumps({"lr": lr, **hparams}), outcome="reached" if steps else "missed",
           steps_to_target=steps, examples_to_target=steps * batch if steps else None,
           tokens_to_target=steps * batch if steps else None, time_to_target=1.0 if steps else None)


def test_sweeps_are_grouped_by_what_they_hold_fixed(tmp_path: Path) -> None:
    for batch, steps in ((8, 800), (16, 420), (32, 300)):
        for seed in (0, 1):
            _sweep_trial(tmp_path, batch=batch, lr=0.01, seed=seed, steps=steps + 10 * seed, schedule="constant")
            _sweep_trial(tmp_path, batch=batch, lr=0.03, seed=seed, steps=None, schedule="constant")
    _sweep_trial(tmp_path, batch=8, lr=0.01, seed=0, steps=50, schedule="cosine")  # another sweep, one batch size
    sweeps = batch_sweeps(read_results(tmp_path, cache=False).all_trials())
    assert list(sweeps) == [("linreg/tiny", "sgd")]  # the cosine trial is no sweep and is not pooled into this one
    summary = summarize_cbs(sweeps[("linreg/tiny", "sgd")])
    assert [(r.batch_size, r.best_lr, r.steps) for r in summary.rows] == [(8, 0.01, 805), (16, 0.01, 425),
                                                                          (32, 0.01, 305)]
    assert summary.critical_batch_size == 16  # 425 <= 1.2 * 402.5; 305 > 1.2 * 201.25
    for batch in (8, 16):  # a second cosine sweep: both are shown, each labelled by what differs
        _sweep_trial(tmp_path, batch=batch, lr=0.01, seed=1, steps=400 // (batch // 8), schedule="cosine")
    labels = sorted(batch_sweeps(read_results(tmp_path, cache=False).all_trials()))
    assert labels == [("linreg/tiny", "sgd (schedule=constant)"), ("linreg/tiny", "sgd (schedule=cosine)")]
