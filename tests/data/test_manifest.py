"""Damaged manifests (issue 8): `data list`, a run needing the dataset and the readers give one line, never a
traceback; markup in the data directory's name prints literally."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from optbench import data
from optbench.cli.data import data as data_group
from optbench.cli import main
from optbench.errors import DataMissingError

from .conftest import FAST, cifar_spec, wiki_spec
from .test_end_to_end import BPE, PLUGIN

WIDE = {"COLUMNS": "600"}
Damage = Callable[[dict[str, Any]], Any]


def _set(*path: str, value: Any) -> Damage:
    """A damage: the manifest with the key at ``path`` set to ``value`` (None deletes it)."""
    def apply(m: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path
        node = m
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
        return m
    return apply


def _common(file: str) -> list[tuple[str, Damage]]:
    return [
        ("a JSON list", lambda m: [m]),
        ("files a list", lambda m: _set("files", value=list(m["files"]))(m)),
        ("files entry without bytes", _set("files", file, "bytes", value=None)),
        ("files entry bytes a string", _set("files", file, "bytes", value="12")),
        ("file name outside the folder", _set("files", value={"../escape": {"bytes": 1}})),
        ("downloads a dict", _set("downloads", value={"file": "x"})),
        ("download without checksum", _set("downloads", value=[{"file": "x"}])),
    ]


IMAGES = _common("train_x.npy") + [
    ("counts a list", _set("counts", value=[1, 2, 3])),
    ("counts of nothing", _set("counts", value={"train": None})),
    ("counts of strings", _set("counts", value={"train": "1", "val": 1, "test": 1})),
    ("no shape", _set("files", "train_x.npy", "shape", value=None)),
]
TEXT = _common("train.bin") + [
    ("splits a list", _set("splits", value=["train", "val"])),
    ("split without tokens", _set("splits", "train", "tokens", value=None)),
    ("split file not listed", _set("splits", "train", "file", value="nope.bin")),
    ("dtype float", _set("dtype", value="float64")),
    ("tokenizer a string", _set("tokenizer", value="bpe")),
    ("tokenizer without vocab_size", _set("tokenizer", "vocab_size", value=None)),
]


def _assert_one_line_everywhere(name: str, workload: str, data_dir: Path, results: Path, why: str) -> None:
    with pytest.raises(DataMissingError, match=f"optbench data prepare {name}"):
        data.read_manifest(name, data_dir)
    listing = CliRunner().invoke(data_group, ["list", "--data-dir", str(data_dir)], env=WIDE)
    assert listing.exit_code == 0, (why, listing.output)
    row = next(line for line in listing.output.splitlines() if f" {name} " in line)
    assert "incomplete" in row and f"optbench data prepare {name}" in row, (why, row)
    run = CliRunner().invoke(main, ["run", "--workload", f"{PLUGIN}:{workload}", "--opt", "adamw", "--quiet",
                                    "--data-dir", str(data_dir), "--results-dir", str(results)])
    assert run.exit_code == 2 and run.output.startswith("error: "), (why, run.output)
    assert len(run.output.strip().splitlines()) == 1, (why, run.output)
    assert not results.exists() or not any(results.rglob("*.parquet"))  # stopped before any trial


def _each_damage(name: str, workload: str, damages: list[tuple[str, Damage]], data_dir: Path,
                 results: Path) -> None:
    manifest_path = data_dir / name / "manifest.json"
    intact = manifest_path.read_text()
    for why, damage in damages:
        manifest_path.write_text(json.dumps(damage(json.loads(intact))))
        _assert_one_line_everywhere(name, workload, data_dir, results, why)
    manifest_path.write_text('{"format_version": 1, "files": ')  # cut short
    _assert_one_line_everywhere(name, workload, data_dir, results, "truncated JSON")
    manifest_path.write_text(intact)
    data.read_manifest(name, data_dir)  # the intact manifest reads: the damages above were the only fault


def test_damaged_image_manifests(cifar_server, cifar_source, data_dir, tmp_path):
    data.prepare(cifar_spec(cifar_source), data_dir=data_dir, mirror=cifar_server.url + "/~kriz", policy=FAST)
    _each_damage("cifar10", "cifar10", IMAGES, data_dir, tmp_path / "results")


def test_damaged_text_manifests(server, wiki_source, data_dir, tmp_path):
    server.files["/wt/wikitext-103-raw-v1.zip"] = wiki_source.archive
    data.prepare(wiki_spec(wiki_source), data_dir=data_dir, mirror=server.url + "/wt", text=BPE, policy=FAST)
    _each_damage("wikitext103", "wikitext", TEXT, data_dir, tmp_path / "results")


def test_array_files_damaged_in_place_are_reported(cifar_server, cifar_source, data_dir):
    data.prepare(cifar_spec(cifar_source), data_dir=data_dir, mirror=cifar_server.url + "/~kriz", policy=FAST)
    array = data_dir / "cifar10" / "val_y.npy"
    array.write_bytes(b"\0" * array.stat().st_size)  # same size as recorded: only loading finds out
    with pytest.raises(DataMissingError, match="val_y.npy does not match its manifest.*--force"):
        data.load_cifar10(data_dir)


def test_token_file_that_is_no_whole_number_of_tokens(server, wiki_source, data_dir):
    server.files["/wt/wikitext-103-raw-v1.zip"] = wiki_source.archive
    data.prepare(wiki_spec(wiki_source), data_dir=data_dir, mirror=server.url + "/wt", text=BPE, policy=FAST)
    manifest_path = data_dir / "wikitext103" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    val = data_dir / "wikitext103" / "val.bin"
    val.write_bytes(val.read_bytes() + b"\0")  # half a uint16 token more
    manifest["files"]["val.bin"]["bytes"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataMissingError, match="val.bin does not match its manifest"):
        data.load_tokens("wikitext103", "val", data_dir)


@pytest.mark.parametrize("folder", ["[red]data[/red]", "data[/bold]", "[link=x]d"])
def test_markup_in_the_data_directory_prints_literally(tmp_path, folder, monkeypatch):
    monkeypatch.delenv("OPTBENCH_DATA", raising=False)
    data_dir = tmp_path / folder
    result = CliRunner().invoke(data_group, ["list", "--data-dir", str(data_dir)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert str(data_dir / "cifar10") in result.output and f"datasets in {data_dir}" in result.output
