"""docs/DATA.md's examples are real: every ``bash`` and ``python`` block runs, in document order, as written.

The published datasets come from the loopback server (``OPTBENCH_MIRROR``) as generated archives in the real formats,
with the catalog's checksums swapped for theirs (the real download, verify and tokenize path); the user corpus is a
generated one of a few hundred KB. Shell lines go through the real CLI (CliRunner on ``optbench.cli.main``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
import torch
from click.testing import CliRunner

import optbench.data
from optbench import data
from optbench.cli import main
from optbench.data import catalog

from .conftest import C4_TRAIN_SHARDS, c4_shard, cifar_spec, wiki_spec, write_text_corpus

DOC = Path(__file__).resolve().parents[2] / "docs" / "DATA.md"
OWN_SECTION = "## Your own text corpus"


def blocks(text: str) -> list[tuple[str, str]]:
    """The ``(language, code)`` of every fenced bash or python block."""
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def commands(code: str) -> Iterator[list[str]]:
    """The arguments after ``optbench`` of each command line of a shell block (comments dropped)."""
    for line in code.splitlines():
        args = shlex.split(line, comments=True)
        if args:
            assert args[0] == "optbench", f"not an optbench command: {line!r}"
            yield args[1:]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def world(server, cifar_source, wiki_source, c4_docs, tmp_path, monkeypatch) -> dict[str, str]:
    """A user's machine: a mirror serving every published source, the default data and results folders, and a
    corpus of their own (``train.txt``, ``valid.txt``) in the working directory."""
    server.files["/cifar-10-python.tar.gz"] = cifar_source.archive
    server.files["/wikitext-103-raw-v1.zip"] = wiki_source.archive
    for i, docs in enumerate(c4_docs["train"]):
        server.files[f"/en/c4-train.{i:05d}-of-01024.json.gz"] = c4_shard(docs)
    server.files["/en/c4-validation.00000-of-00008.json.gz"] = c4_shard(c4_docs["val"][0])
    # The published checksums cannot match generated archives: the served ones' take their place (as in the other
    # data tests), and C4 has only the shards the server holds.
    specs = {"cifar10": cifar_spec(cifar_source), "wikitext103": wiki_spec(wiki_source),
             "c4": replace(catalog.C4, train_shards=catalog.C4.train_shards[:C4_TRAIN_SHARDS])}
    monkeypatch.setattr(optbench.data, "DATASETS", MappingProxyType(specs))
    monkeypatch.chdir(tmp_path)
    write_text_corpus(tmp_path)
    env = {"OPTBENCH_DATA": str(tmp_path / "data"), "OPTBENCH_MIRROR": server.url,
           "OPTBENCH_RESULTS": str(tmp_path / "results"), "COLUMNS": "400"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _run(lang: str, code: str, env: dict[str, str]) -> list[str]:
    """Run one block; the outputs of its commands."""
    if lang == "python":
        exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own documentation
        return []
    outputs = []
    for args in commands(code):
        r = CliRunner().invoke(main, args, env=env)
        assert r.exit_code == 0, f"optbench {shlex.join(args)}:\n{r.output}"
        outputs.append(r.output)
    return outputs


def test_the_python_examples_compile_and_their_imports_resolve():
    """The quick guard of the suite (the full run below is slow): every Python block compiles, and every name it
    imports exists (``from optbench.data import TextOptions`` once failed)."""
    import ast
    import importlib.util

    found = [code for lang, code in blocks(DOC.read_text(encoding="utf-8")) if lang == "python"]
    assert found
    for code in found:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"from {node.module} import {alias.name}"


@pytest.mark.slow
def test_every_example_of_data_md_runs(world, tmp_path):
    found = blocks(DOC.read_text(encoding="utf-8"))
    assert [lang for lang, _ in found].count("python") >= 3 and [lang for lang, _ in found].count("bash") >= 2
    for lang, code in found:
        _run(lang, code, world)
    assert data.read_manifest("cifar10")["counts"]["val"] > 0
    assert data.read_manifest("mycorpus")["source"] == "user-supplied"


def test_own_corpus_section_prepares_and_trains_with_its_commands_only(world, tmp_path):
    """A new user with nothing prepared: the section's commands, as written, prepare their corpus and train on it."""
    section = DOC.read_text(encoding="utf-8").split(OWN_SECTION, 1)[1].split("\n## ", 1)[0]
    shell = [code for lang, code in blocks(section) if lang == "bash"]
    assert len(shell) == 1
    outputs = _run("bash", shell[0], world)
    assert len(outputs) == 4
    prepared, listing, run, score = outputs
    assert "mycorpus: train " in prepared and "bpe vocab" in prepared
    assert "user-supplied, not verified" in next(x for x in listing.splitlines() if " mycorpus " in x)
    assert "lm/tiny@mycorpus" in run
    assert "lm/tiny@mycorpus" in score
    parquet = list((tmp_path / "results").rglob("*.parquet"))
    assert len(parquet) == 1
    import pyarrow.parquet as pq

    rows = pq.read_table(parquet[0]).to_pylist()
    assert rows[0]["workload"] == "lm" and rows[0]["size"] == "tiny@mycorpus" and rows[-1]["step"] == 20
    # The Python equivalent in the same section runs against what the commands prepared.
    python = [code for lang, code in blocks(section) if lang == "python"]
    assert len(python) == 1
    _run("python", python[0], world)
