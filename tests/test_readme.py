"""The README's plugin example is real code: extract it, load it as a file plugin, and run the conformance suite."""

from __future__ import annotations

import re
from pathlib import Path

from optbench.conformance import ALL_CHECKS, run_check
from optbench.registry import load_submission

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
