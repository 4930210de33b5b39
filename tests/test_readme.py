"""The README's plugin example is real code: extract it, load it as a file plugin, and run the conformance suite."""

from __future__ import annotations

import re
from pathlib import Path

from optbench.engine.conformance import ALL_CHECKS, run_check
from optbench.plugins.registry import load_submission

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_submission_example_conforms(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if b.startswith("# my_optimizers.py"))
    path = tmp_path / "my_optimizers.py"
    path.write_text(example)
    loaded = load_submission(f"{path}:signum")
    for check in ALL_CHECKS:
        result = run_check(loaded, check)
        assert result.passed, f"{check}: {result.detail}"


def test_readme_large_batch_example_runs(tmp_path):
    """The README's accumulation command, as written, with a budget of a few steps appended."""
    import shlex

    from click.testing import CliRunner

    from optbench.cli import main

    section = README.read_text().split("## Multi-GPU and large batches", 1)[1]
    line = next(x.strip() for x in section.splitlines() if "--micro-batch-size 256" in x)
    args = shlex.split(line)[1:]
    assert args[:2] == ["run", "-w"]
    res = CliRunner().invoke(main, [*args, "--max-steps", "3", "--quiet", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert len(list(tmp_path.rglob("*.parquet"))) == 1


def _section_commands(title: str) -> list[list[str]]:
    """The shell commands of a README section (indented lines starting with optbench, continuations joined)."""
    import shlex

    section = README.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    text = section.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.startswith("    optbench "):
            out.append(shlex.split(line.split("#", 1)[0])[1:])
    return out


def test_readme_cluster_commands_run_as_far_as_this_machine_allows(tmp_path, monkeypatch):
    """The SLURM command stops at its first missing piece here (no sbatch), in one line; `status` runs."""
    from click.testing import CliRunner

    from optbench.cli import main

    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    tune, status = _section_commands("Running on a cluster")
    res = CliRunner().invoke(main, tune)
    assert res.exit_code == 2 and "no sbatch" in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, status)
    assert res.exit_code == 0 and "0 done" in res.output


def test_readme_entry_point_example_loads_without_a_warning(tmp_path, monkeypatch):
    """The README's plugin file installed as its `pyproject.toml` block registers it (a dist-info folder on the
    path): loading it by its entry-point name, and a command that does, warns of nothing (a name mismatch would)."""
    import tomllib
    import warnings

    from click.testing import CliRunner

    from optbench.cli import main

    text = README.read_text()
    example = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
                   if b.startswith("# my_optimizers.py"))
    toml = next(b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "optbench.submissions" in b)
    (name, value), = tomllib.loads(toml)["project"]["entry-points"]["optbench.submissions"].items()
    (tmp_path / "my_optimizers.py").write_text(example)
    info = tmp_path / "my_optimizers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-optimizers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[optbench.submissions]\n{name} = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (PluginWarning: the name mismatch) fails the test
        loaded = load_submission(name)
    assert loaded.origin.source == "entry-point" and loaded.obj.name == name
    res = CliRunner().invoke(main, ["list", name])
    assert res.exit_code == 0 and "warning" not in res.output, res.output
