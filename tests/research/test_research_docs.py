"""Every command of docs/RESEARCH.md's bash blocks parses, and (slow) runs on a budget of a few steps."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from optbench.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "RESEARCH.md"


def commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("optbench "):
                out.append(shlex.split(line)[1:])
    return out


def test_the_doc_has_commands() -> None:
    assert len(commands()) >= 8


@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_each_command_parses(args: list[str]) -> None:
    command = main.get_command(click.Context(main), args[0])
    assert command is not None, args[0]
    with command.make_context(args[0], list(args[1:])):  # parses and checks every option, runs nothing
        pass


def _short(args: list[str], tmp: Path) -> list[str]:
    command = main.get_command(click.Context(main), args[0])
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    extra = []
    if "--tokens" in args:  # a token budget sets the steps (and refuses --max-steps): a few steps' worth instead
        args = [*args]
        args[args.index("--tokens") + 1] = "4096"
    elif "--max-steps" in names:
        extra += ["--max-steps", "8"]
    if "--results-dir" in names:
        extra += ["--results-dir", str(tmp / "results")]
    return [*args, *extra]


@pytest.mark.slow
@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_each_command_runs_on_a_few_steps(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the PNGs and tables they write land here
    if "DATA" in args:  # the LM recipes: the synthetic corpus the doc says to write without the real datasets
        from optbench.data.synthetic import write_synthetic

        write_synthetic(tmp_path / "DATA", n_tokens=40_000)
    res = CliRunner().invoke(main, _short(args, tmp_path))
    assert res.exit_code == 0, res.output[-2000:]
