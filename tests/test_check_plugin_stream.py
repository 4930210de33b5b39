"""`optbench check-plugin`: a line per check printed as it runs, a per-check time limit (a check past it is stopped
and reported, and the command goes on), an exception reported as an exception, and the submission's capabilities."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine import conformance

PLUGIN = textwrap.dedent('''
    import time
    import torch

    class StepRaises(torch.optim.SGD):
        def __init__(self, params, lr=0.1):
            super().__init__(params, lr=lr)

        def step(self, closure=None):
            raise RuntimeError("step exploded")

    class Sleepy(torch.optim.SGD):
        def __init__(self, params, lr=0.1):
            super().__init__(params, lr=lr)

        def step(self, closure=None):
            time.sleep(0.2)
            return super().step(closure)
''')
ONLY = ("api", "coverage", "determinism", "state_dict", "bfloat16", "quadratic", "linreg_tiny")


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "plugins.py"
    path.write_text(PLUGIN)
    return path


def _skip_all_but(*keep):
    return [a for name in ONLY if name not in keep for a in ("--skip", name)]


def test_an_exception_is_reported_as_an_exception_not_as_an_lr_grid_miss(plugin):
    res = CliRunner().invoke(main, ["check-plugin", f"{plugin}:StepRaises",
                                    *_skip_all_but("quadratic", "linreg_tiny")])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    quad = next(x for x in lines if x.strip().startswith("quadratic"))
    lin = next(x for x in lines if x.strip().startswith("linreg_tiny"))
    assert "exception" in quad and "RuntimeError: step exploded at lr=0.001" in quad
    assert "exception" in lin and "RuntimeError: step exploded" in lin  # raised inside the trial, said so
    assert "no lr of" not in res.output
    assert lines[-1] == "0 passed, 0 failed, 2 raised an exception"


def test_a_check_past_its_time_limit_is_stopped_and_the_rest_run(plugin):
    res = CliRunner().invoke(main, ["check-plugin", f"{plugin}:Sleepy", "--check-timeout", "0.3",
                                    *_skip_all_but("api", "coverage", "linreg_tiny")])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert "time limit 0.3 s per check" in lines[0]
    assert any(x.strip().startswith("coverage") and "timed out" in x for x in lines)
    assert any(x.strip().startswith("linreg_tiny") and "timed out" in x for x in lines)
    assert any(x.strip().startswith("api") and "pass" in x for x in lines)  # the checks went on
    assert lines[-1].startswith("1 passed, 0 failed, 2 timed out") and "--check-timeout SECONDS" in lines[-1]


def test_each_check_is_printed_as_it_runs_and_capabilities_are_listed(monkeypatch, capsys):
    from optbench.commands.plugins import check_plugin

    seen = []
    real = conformance.run_check

    def spy(loaded, name, **kwargs):
        seen.append((name, capsys.readouterr().out))  # what was printed before this check started
        return real(loaded, name, **kwargs)

    monkeypatch.setattr(conformance, "run_check", spy)
    code = check_plugin("schedulefree", skip=[n for n in ONLY if n not in ("api", "coverage")], limit=60)
    assert code == 0
    (first, before_first), (second, before_second) = seen
    assert (first, second) == ("api", "coverage")
    assert "capabilities: eval_params" in before_first and before_first.rstrip().endswith("api")
    assert "pass" in before_second  # api's result was out before coverage began
    assert capsys.readouterr().out.strip().endswith("2 passed, 0 failed")


def test_the_default_time_limit_is_the_one_the_help_states():
    res = CliRunner().invoke(main, ["check-plugin", "--help"])
    assert f"[default: {conformance.DEFAULT_TIME_LIMIT:g}]" in " ".join(res.output.split())


@pytest.mark.parametrize(("cls", "caps"), [("ModeSwitching", "eval_params"), ("LineSearch", "closure"),
                                           ("DiagonalNewton", "create_graph")])
def test_check_plugin_lists_what_it_detected_on_each_family(cls, caps):
    skip = [a for n in ONLY if n != "api" for a in ("--skip", n)]
    res = CliRunner().invoke(main, ["check-plugin", f"tests.plugins.families:{cls}", *skip])
    assert res.exit_code == 0, res.output
    assert f"capabilities: {caps};" in res.output.splitlines()[0], res.output


@pytest.mark.parametrize("limit", ["nan", "inf", "0", "-1", "9223372036854775808", "true", ""])
def test_a_bad_check_timeout_is_one_line_before_any_check(limit):
    res = CliRunner().invoke(main, ["check-plugin", "sgd", "--check-timeout", limit])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    assert "conformance of" not in res.output  # refused before the suite started
