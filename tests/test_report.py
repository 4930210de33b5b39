"""``optbench report``: files written, page contents (leaderboard, paired tests, provenance), escaping, speed,
and rendering in a real headless browser."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from optbench import SCHEMA_VERSION
from optbench.errors import UsageError
from optbench.report.html import build_report
from optbench.store.reader import read_results
from optbench.store.records import EvalRow, TrialRecord
from optbench.store.writer import write_trial

EVIL = "sgd<i>&\"x\""  # a submission name that must be escaped everywhere


def _trial(root: Path, *, workload: str, sub: str, study: str, seed: int, rate: float, lr: float,
           diverge: bool = False, **record: Any) -> None:
    """A synthetic trial: excess risk exp(-rate * step / 100), evaluated every 100 steps, target 0.1, 1000 steps;
    ``record``: TrialRecord fields to set beside (e.g. ``base_batch_size``)."""
    rows, hit = [], None
    for k in range(11):
        step = 100 * k
        value = math.nan if diverge and k > 3 else math.exp(-rate * step / 100)
        rows.append(EvalRow(step=step, examples=32 * step, tokens=32 * step, timed_seconds=0.01 * step,
                            eval_seconds=0.001 * k, wall_seconds=0.012 * step, train_loss=value,
                            metric_value=value, learning_rate=lr, batch_size=32,
                            metrics_json=json.dumps({"excess_risk": None if math.isnan(value) else value})))
        if hit is None and value <= 0.1:
            hit = rows[-1]
            break
        if math.isnan(value):
            break
    finite = [r.metric_value for r in rows if not math.isnan(r.metric_value)]
    outcome = "reached" if hit else ("diverged" if diverge else "missed")
    rec = TrialRecord(
        schema_version=SCHEMA_VERSION, run_id=f"{workload}-{sub}-{study}-{seed}".replace("<", "").replace(
            ">", "").replace("&", "").replace('"', ""), created_at="2026-01-01T00:00:00+00:00",
        workload=workload, size="tiny", workload_origin="optbench==0.1.0", submission=sub,
        submission_origin="optbench==0.1.0", hparams=json.dumps({"lr": lr}), seed=seed, study=study, trial="0",
        outcome=outcome, metric_name="excess_risk", metric_goal="min", target=0.1,
        time_to_target=hit.timed_seconds if hit else None, steps_to_target=hit.step if hit else None,
        examples_to_target=hit.examples if hit else None, tokens_to_target=hit.tokens if hit else None,
        best_metric=min(finite), total_steps=rows[-1].step, total_timed_seconds=rows[-1].timed_seconds,
        max_steps=1000, max_seconds=None, error=None, optbench_version="0.1.0", code_hash="feedc0de12345678",
        git_commit="abc123", torch_version="2.13.0", python_version="3.11.7", device="cpu",
        device_name="Test CPU <model>", cpu_model="Test CPU <model>")
    write_trial(root, replace(rec, **record), rows)


def _fill(root: Path, *, workloads: tuple[str, ...] = ("linreg", "other"), seeds: int = 6) -> Path:
    """3 submissions x workloads x seeds trials; 'fast' always wins, EVIL misses, and diverges once."""
    for w in workloads:
        for seed in range(seeds):
            study = f"seed{seed}"
            _trial(root, workload=w, sub="fast", study=study, seed=seed, rate=0.9 + 0.05 * seed, lr=0.01)
            _trial(root, workload=w, sub="adamw", study=study, seed=seed, rate=0.5 + 0.03 * seed,
                   lr=[0.001, 0.003, 0.01][seed % 3])
            _trial(root, workload=w, sub=EVIL, study=study, seed=seed, rate=0.2 if seed < 4 else 0.05,
                   lr=[0.03, 0.1, 0.3][seed % 3], diverge=seed == 5)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report of 36 trials (3 submissions x 2 workloads x 6 seeds), shared by the tests that read it."""
    root = _fill(tmp_path_factory.mktemp("store") / "results")
    start = time.process_time()
    rep = build_report(read_results(root), out=root.parent / "rep")
    return rep, time.process_time() - start


def test_report_writes_page_and_plots(built):
    rep, cpu_seconds = built
    assert cpu_seconds < 10, f"report took {cpu_seconds:.1f} CPU seconds for 36 trials"
    names = {p.name for p in rep.images}
    for stem in ("profile", "outcomes", "curves-linreg-tiny", "curves-other-tiny", "sensitivity-linreg-tiny"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    for p in rep.images:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in data
    page = rep.index.read_text()
    assert page.count("data:image/png;base64,") == len(rep.images) // 2
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
    board = page.split('<table id="leaderboard">')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td class=\"l\">(\d+)</td><td class=\"l\">(.*?)</td>", board)
    assert [r[1] for r in rows] == ["fast", "adamw", "sgd&lt;i&gt;&amp;&quot;x&quot;"]
    assert "1.000 [" in board  # fast: score 1 with a bootstrap interval
    assert EVIL not in page  # escaped everywhere
    prov = page.split('<table id="provenance">')[1].split("</table>")[0]
    assert "feedc0de12345678" in prov and "abc123" in prov and "Test CPU &lt;model&gt;" in prov
    assert "optbench==0.1.0" in page.split('<table id="origins">')[1]


def test_paired_table_reports_the_exact_sign_flip_p_value(built):
    page = built[0].index.read_text()
    paired = page.split('<table id="paired">')[1].split("</table>")[0]
    # fast beats adamw on all 6 matched studies: exact one-sided p = 2^-6.
    row = next(r for r in paired.split("<tr>") if "linreg/tiny" in r and "adamw" in r)
    assert f"{2 ** -6:.3g}" in row


def test_report_of_nothing_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no results"):
        build_report(read_results(tmp_path / "empty"), out=tmp_path / "rep")


def test_cli_report(tmp_path):
    from optbench.cli import App
    from optbench.cli.tuning import add_commands

    @click.group(cls=App)
    def main() -> None:
        pass

    add_commands(main)
    store = _fill(tmp_path / "results", workloads=("linreg",), seeds=2)
    out = tmp_path / "cli-rep"
    r = CliRunner().invoke(main, ["report", "--results-dir", str(store), "--out", str(out), "--by", "steps"])
    assert r.exit_code == 0, r.output
    assert (out / "index.html").is_file() and "steps to target" in (out / "index.html").read_text()
    bad = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "error: no results" in bad.output


def _browser() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_page_renders_in_headless_chromium(built, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser found: install one with 'apt-get install chromium' to run this test")
    rep = built[0]
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", rep.index.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    n_images = len(rep.images) // 2
    # The page's load handler counts images that decoded (complete, with a natural width).
    assert f'data-images-decoded="{n_images}/{n_images}"' in dom
    board = dom.split('<table id="leaderboard">')[1].split("</table>")[0]
    assert board.count("<tr>") == 4  # header + 3 submissions, parsed as a table by the browser
    assert "fast" in board and "sgd&lt;i&gt;" in board
    assert '<table id="provenance">' in dom
