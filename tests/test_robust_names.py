"""Names from results are text, never markup (issue 8): rich markup ("[/bold]", "[red]") and mathtext ("$x_1^2$")
in submission, workload, study and hyperparameter names go through `score` and `report` literally."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.store.writer import write_trial

from .test_results import _record, _row

SUBS = ("[/bold]sgd", "[red]adam", "$x_1^2$", "a$b^c_d", "$x^$", "_hidden")  # "$x^$": mathtext cannot parse it
WORKLOAD = "lin$reg_^x[/i]"
HPARAM = "$l_r^2$[/b]"
WIDE = {"COLUMNS": "1000"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Every submission: three studies of one trial, reaching at different times; real Parquet files."""
    root = tmp_path_factory.mktemp("names") / "results"
    for i, sub in enumerate(SUBS):
        for seed in range(3):
            lr = [0.01, 0.03, 0.1][seed]
            t = 1.0 + i + 0.1 * seed
            rec = replace(_record(), run_id=f"r{i}-{seed}", submission=sub, workload=WORKLOAD, size="tiny",
                          study=f"s{seed}[red]", seed=seed, time_to_target=t, total_timed_seconds=t,
                          hparams=json.dumps({"lr": lr, HPARAM: lr, "[/bold]": f"[red]v{seed}"}))
            write_trial(root, rec, [replace(_row(0, 1.0)), replace(_row(100, 0.05), timed_seconds=t)])
    return root


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), env=WIDE)


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex", "csv", "json"])
def test_score_prints_names_literally(store, fmt):
    r = _invoke("score", "--results-dir", str(store), "--format", fmt)
    assert r.exit_code == 0, r.output
    shown = r.output  # undo the LaTeX escapes (render._TEX): those ending in "{}" before "\\{" and "\\}"
    for tex, ch in (("\\textbackslash{}", "\\"), ("\\textasciicircum{}", "^"), ("\\textasciitilde{}", "~"),
                    ("\\_", "_"), ("\\$", "$"), ("\\#", "#"), ("\\{", "{"), ("\\}", "}")):
        shown = shown.replace(tex, ch)
    for name in (*SUBS, WORKLOAD):
        assert name in shown or json.dumps(name)[1:-1] in shown, (name, r.output)


@pytest.mark.parametrize("hparam", [HPARAM, "[/bold]"])
def test_sensitivity_table_prints_names_and_values_literally(store, hparam):
    r = _invoke("score", "--results-dir", str(store), "--sensitivity", hparam)
    assert r.exit_code == 0, r.output
    assert f"sensitivity to {hparam}" in r.output and "[/bold]sgd" in r.output
    if hparam == "[/bold]":
        assert "[red]v0" in r.output


def test_report_draws_markup_and_mathtext_names(store, tmp_path):
    out = tmp_path / "rep"
    r = _invoke("report", "--results-dir", str(store), "--out", str(out), "--hparam", HPARAM)
    assert r.exit_code == 0, r.output
    page = (out / "index.html").read_text()
    for name in SUBS:
        assert name.replace("<", "&lt;") in page
    svg = (out / "profile.svg").read_text()  # text stays text in the SVG (svg.fonttype none)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)  # mathtext would draw glyphs, not this text
    for name in SUBS:  # every legend entry, "_hidden" included (matplotlib drops labels starting with "_")
        assert any(t.strip().startswith(f"{name} (score") for t in texts), (name, texts)
    assert sorted(p.name for p in out.glob("sensitivity-*.png"))  # the sensitivity plot to the odd hparam


def test_report_out_below_a_file_is_one_line_before_plotting(store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _invoke("report", "--results-dir", str(store), "--out", str(blocker / "rep"))
    assert r.exit_code == 2 and r.output.startswith("error: report directory ") and "not writable" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_report_write_failure_midway_is_one_line(store, tmp_path):
    out = tmp_path / "rep"
    (out / "outcomes.png").mkdir(parents=True)  # the second image cannot be written: a folder has its name
    r = _invoke("report", "--results-dir", str(store), "--out", str(out))
    assert r.exit_code == 2 and r.output.startswith("error: cannot write the report in "), r.output
    assert len(r.output.strip().splitlines()) == 1


def test_problems_under_markup_paths_print_literally(store, tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    for path in store.rglob("*.parquet"):  # the same trials ...
        (root / path.name).write_bytes(path.read_bytes())
    bad = root / "a[" / "bold]x" / "bad.parquet"  # ... and a damaged file whose path holds "[/bold]"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk")
    r = _invoke("score", "--results-dir", str(root))  # report prints its problems the same way
    assert r.exit_code == 0, r.output
    assert f"{bad}: not a readable Parquet file" in r.output.replace("\n", "")
