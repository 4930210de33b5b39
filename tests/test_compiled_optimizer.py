"""A plain optimizer with a ``fullgraph=True`` compiled update (heavyball's shape) trains: the FLOP count at trial
start runs compiled functions eagerly, so torch.compile never marks their frames skipped for the real steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from optbench.cli import main

HERE = Path(__file__).parent


def test_compiled_fullgraph_optimizer_trains_and_is_counted(tmp_path):
    from click.testing import CliRunner

    spec = f"{HERE / 'plugins' / 'compiled_opt.py'}:CompiledSGD"
    out = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", spec, "--max-steps", "20", "--eval-every", "10",
                                    "--device", "cpu", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    (path,) = tmp_path.rglob("*.parquet")
    record = pd.read_parquet(path).iloc[0]
    assert record["outcome"] == "missed", record["error"]
    assert record["total_steps"] == 20
    assert record["optimizer_flops_per_step"] > 0  # counted eagerly, not skipped
