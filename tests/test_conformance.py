"""The conformance suite, table-driven: every registered submission x every check (the suite that
``optbench check-plugin`` runs on third-party plugins)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine.conformance import ALL_CHECKS, run_check
from optbench.plugins.registry import entry_points, load_submission

SUBMISSIONS = sorted(entry_points("submissions"))


@pytest.mark.parametrize("check", ALL_CHECKS)
@pytest.mark.parametrize("name", SUBMISSIONS)
def test_builtin_submission_conforms(name, check):
    result = run_check(load_submission(name), check)
    assert result.passed, f"{name}: {check}: {result.detail}"


def test_plain_torch_optimizer_conforms():
    loaded = load_submission("torch.optim:Adam")
    for check in ("api", "coverage", "determinism", "state_dict", "bfloat16"):
        assert run_check(loaded, check).passed, check


def test_check_plugin_cli_passes_good_and_fails_bad(bad_plugins):
    ok = CliRunner().invoke(main, ["check-plugin", "sgd"])
    assert ok.exit_code == 0, ok.output
    assert "7 passed, 0 failed" in ok.output
    bad = CliRunner().invoke(main, ["check-plugin", f"{bad_plugins}:NaNOptimizer", "--skip", "linreg_tiny"])
    assert bad.exit_code == 1 and "FAIL" in bad.output
    worse = CliRunner().invoke(main, ["check-plugin", "nope"])
    assert worse.exit_code == 2 and worse.output.startswith("error: unknown submission")
