"""``optbench data prepare synthetic``: the LM recipes' corpus from the installed package, from any directory, with
neither pytest nor the repository's ``tests`` package importable, and byte-identical to the corpus the documented
results were measured on (the hashes below are those of ``python -m benchmarks.synthetic_lm_data`` before the
generator moved into the package)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main

# sha256 of the 400,000-token corpus's files (the default size; docs/RESEARCH.md's numbers were measured on it).
TRAIN_SHA = "c56e5b0aa553a1ba585f32a583ba81641d798fb49e6a3c7c44ad0b2ba96c82f2"
VAL_SHA = "97e16dceffd8e741660b29296f4c0847db32e8535b51f15b3bf00a21555f5c2d"
MANIFEST_SHA = {"wikitext103": "a735548ec9e77101801c88ad72e189577178feee007d9c328c0c07a5b82c6c70",
                "c4": "723d4c19f137ae62ee0f9a5aa9258685cbd5f4f34676b0971ac6ba815a299b63"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_corpus(root: Path) -> None:
    for name, manifest in MANIFEST_SHA.items():
        assert _sha(root / name / "train.bin") == TRAIN_SHA
        assert _sha(root / name / "val.bin") == VAL_SHA
        assert _sha(root / name / "manifest.json") == manifest
    assert sorted(p.name for p in root.iterdir()) == ["c4", "wikitext103"]  # no scratch folder left behind


def test_cli_writes_the_documented_corpus_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["data", "prepare", "synthetic", "--data-dir", "corpus"])
    assert res.exit_code == 0, res.output
    _assert_corpus(tmp_path / "corpus")
    again = CliRunner().invoke(main, ["data", "prepare", "synthetic", "--data-dir", "corpus"])
    assert again.exit_code == 0 and "kept" in again.output  # a dataset already there is left as it is
    from optbench.data import load_tokens

    assert load_tokens("wikitext103", "val", tmp_path / "corpus").size == 40_000  # the workloads' reader takes it


def test_runs_as_a_process_without_pytest_from_any_directory(tmp_path: Path) -> None:
    """The quick-start environment has no pytest: block it (and the repository's tests package) in the child."""
    code = ("import sys, runpy; sys.modules['pytest'] = None; sys.modules['tests'] = None; "
            "sys.argv = ['optbench', 'data', 'prepare', 'synthetic', '--data-dir', 'corpus']; "
            "runpy.run_module('optbench', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not the checkout's path
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "use --data-dir" in res.stdout
    _assert_corpus(tmp_path / "corpus")


@pytest.mark.parametrize("args, says", [
    ([], "needs --data-dir"),
    (["--data-dir", "d", "--force"], "--force applies not"),
    (["--data-dir", "d", "--tokens", "1000"], "--tokens"),
])
def test_usage_errors(args: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["data", "prepare", "synthetic", *args])
    assert res.exit_code == 2 and says in res.output, res.output
    assert not (tmp_path / "d").exists()


def test_refuses_the_default_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins carry the real datasets' names: never where a real WikiText-103 or C4 goes."""
    monkeypatch.setenv("OPTBENCH_DATA", str(tmp_path / "cache"))
    res = CliRunner().invoke(main, ["data", "prepare", "synthetic", "--data-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2 and "default data directory" in res.output, res.output
    assert not (tmp_path / "cache" / "wikitext103").exists()
