"""An entry point whose name differs from the name its submission gives itself loads with a one-line warning."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.plugins import registry
from optbench.cli import main
from optbench.errors import PluginWarning


@pytest.fixture
def renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.entry_points

    def with_alias(kind):
        eps = dict(real(kind))
        if kind == "submissions":
            eps["my-adamw"] = metadata.EntryPoint(name="my-adamw", value="optbench_submissions.adamw:adamw",
                                                  group="optbench.submissions")
        return eps

    monkeypatch.setattr(registry, "entry_points", with_alias)


def test_the_loader_warns(renamed: None) -> None:
    with pytest.warns(PluginWarning, match="'my-adamw' calls itself 'adamw'"):
        loaded = registry.load_submission("my-adamw")
    assert loaded.label == "my-adamw"


def test_matching_names_load_silently(recwarn: pytest.WarningsRecorder) -> None:
    registry.load_submission("adamw")
    assert not [w for w in recwarn if issubclass(w.category, PluginWarning)]


def test_the_cli_prints_it_in_one_line(renamed: None, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "my-adamw", "--max-steps", "2", "--quiet",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if "calls itself" in x]
    assert lines and lines[0].startswith("warning: submission entry point 'my-adamw'")
