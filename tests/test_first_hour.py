"""What a new user meets first: a compact `list` with detail views, check-plugin -o, a first line before torch."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from optbench.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_list_fits_100_columns() -> None:
    res = invoke("list")
    assert res.exit_code == 0, res.output
    assert max(len(line.rstrip()) for line in res.output.splitlines()) <= 100
    for name in ("linreg", "wikitext", "adamw", "soap", "seesaw_sgd"):
        assert f" {name} " in res.output


def test_list_details_of_a_workload_show_sizes_budgets_and_how_targets_were_chosen() -> None:
    res = invoke("list", "linreg")
    assert res.exit_code == 0, res.output
    for text in ("tiny (default)", "3000 steps / 60 s", "50 steps", "excess risk 0.1", "lower is better"):
        assert text in res.output
    assert max(len(line.rstrip()) for line in res.output.splitlines()) <= 100
    lm = invoke("list", "wikitext")
    assert "128 (32)" in lm.output and max(len(line.rstrip()) for line in lm.output.splitlines()) <= 100


def test_list_details_of_a_submission_show_defaults_and_search_space() -> None:
    res = invoke("list", "soap")
    assert res.exit_code == 0, res.output
    for text in ("Vyas et al. 2024", "precondition_frequency", "search space", "0.0003 .. 0.03 (log)"):
        assert text in res.output


def test_list_of_an_unknown_name_is_one_line() -> None:
    res = invoke("list", "adamx")
    assert res.exit_code == 2 and "adamw" in res.output and len(res.output.strip().splitlines()) == 1


def test_check_plugin_takes_hyperparameters() -> None:
    res = invoke("check-plugin", "torch.optim:RAdam", "-o", "lr=0.01", "--skip", "linreg_tiny")
    assert res.exit_code == 0, res.output
    assert "grid" not in res.output  # the given lr is checked, not a grid
    bad = invoke("check-plugin", "torch.optim:RAdam", "-o", "lrr=0.01")
    assert bad.exit_code == 2 and "no hyperparameter lrr" in bad.output


def test_run_says_something_before_the_heavy_imports(tmp_path: Path, monkeypatch) -> None:
    import optbench.cli

    monkeypatch.setattr(optbench.cli, "_interactive", lambda: True)  # as in a terminal
    res = invoke("run", "-w", "linreg", "-s", "adamw", "--max-steps", "2", "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "optbench run: preparing 1 trial(s) of linreg ..."


def test_a_script_sees_only_the_one_error_line(tmp_path: Path) -> None:
    res = invoke("run", "-w", "linrg", "--results-dir", str(tmp_path))
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
