"""Each real workload end to end on generated data: `data prepare` from the loopback server (the real download,
verify, unpack and tokenize path), then `optbench run` and `optbench score` through the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from optbench import data
from optbench.cli import main
from optbench.data.download import DownloadPolicy
from optbench.data.text import TextOptions
from tests.data.conftest import cifar_spec, wiki_spec

PLUGIN = Path(__file__).parent.parent / "plugins" / "e2e_workloads.py"
FAST = DownloadPolicy(attempts=1, backoff_s=0.0, timeout_s=10.0)
BPE = TextOptions(tokenizer="bpe", vocab_size=400)


def _run_and_score(workload: str, data_dir: Path, results: Path) -> dict:
    r = CliRunner().invoke(main, ["run", "--workload", f"{PLUGIN}:{workload}", "--opt", "adamw", "--quiet",
                                  "--data-dir", str(data_dir), "--results-dir", str(results)])
    assert r.exit_code == 0, r.output
    s = CliRunner().invoke(main, ["score", "--results-dir", str(results), "--format", "json"])
    assert s.exit_code == 0, s.output
    return json.loads(s.stdout)


def test_cifar10_prepare_run_score(cifar_server, cifar_source, data_dir, tmp_path):
    data.prepare(cifar_spec(cifar_source), data_dir=data_dir, mirror=cifar_server.url + "/~kriz", policy=FAST)
    board = _run_and_score("cifar10", data_dir, tmp_path / "results")
    row = board["rows"][0]
    assert row["submission"] == "adamw" and row["cifar10/e2e:ratio"] == 1.0  # target 0: reached at step 0


def test_wikitext_prepare_run_score(server, wiki_source, data_dir, tmp_path):
    server.files["/wt/wikitext-103-raw-v1.zip"] = wiki_source.archive
    data.prepare(wiki_spec(wiki_source), data_dir=data_dir, mirror=server.url + "/wt", text=BPE, policy=FAST)
    board = _run_and_score("wikitext", data_dir, tmp_path / "results")
    assert board["rows"][0]["reached"] == 1


def test_c4_prepare_run_score(c4_server, data_dir, tmp_path):
    data.prepare("c4", data_dir=data_dir, mirror=c4_server.url + "/hf", text=replace(BPE, tokens=5000), policy=FAST)
    board = _run_and_score("c4", data_dir, tmp_path / "results")
    assert board["rows"][0]["reached"] == 1


def test_unprepared_data_is_one_line_with_the_command(data_dir, tmp_path):
    r = CliRunner().invoke(main, ["run", "--workload", f"{PLUGIN}:wikitext", "--data-dir", str(data_dir),
                                  "--results-dir", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert r.output.startswith("error: ") and "optbench data prepare wikitext103 --data-dir" in r.output
    assert len(r.output.strip().splitlines()) == 1
