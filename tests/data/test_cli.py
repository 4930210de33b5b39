"""``optbench data prepare|list`` through click's CliRunner, and the cheap import the main CLI relies on."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from optbench import data
from optbench.cli.data import data as data_group
from optbench.errors import UsageError

from .conftest import FAST, cifar_spec

WIDE = {"COLUMNS": "400"}  # one table row per line, whatever the temp path length


def test_list_shows_unprepared_datasets_with_their_prepare_command(data_dir):
    result = CliRunner().invoke(data_group, ["list", "--data-dir", str(data_dir)], env=WIDE)
    assert result.exit_code == 0, result.output
    for name in ("cifar10", "wikitext103", "c4"):
        row = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert "not prepared" in row
        assert f"optbench data prepare {name} --data-dir {data_dir}" in row


def test_list_shows_counts_and_checksums_of_prepared_datasets(cifar_server, cifar_source, data_dir):
    manifest = data.prepare(cifar_spec(cifar_source), data_dir=data_dir, mirror=cifar_server.url + "/~kriz",
                            policy=FAST)
    result = CliRunner().invoke(data_group, ["list", "--data-dir", str(data_dir)], env=WIDE)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " cifar10 " in line)
    assert "prepared" in row and "not prepared" not in row
    assert str(data_dir / "cifar10") in row
    assert "train 180 · val 20 · test 50 images" in row
    md5 = manifest["downloads"][0]["md5"]
    assert f"cifar-10-python.tar.gz: md5 {md5[:16]}… published, verified" in row
    (data_dir / "cifar10" / "train_x.npy").unlink()
    result = CliRunner().invoke(data_group, ["list", "--data-dir", str(data_dir)], env=WIDE)
    row = next(line for line in result.output.splitlines() if " cifar10 " in line)
    assert "incomplete" in row and "optbench data prepare cifar10" in row


def test_prepare_c4_from_a_mirror_given_by_environment(c4_server, data_dir):
    env = WIDE | {"OPTBENCH_MIRROR": c4_server.url + "/hf"}
    args = ["prepare", "c4", "--data-dir", str(data_dir), "--tokens", "400", "--tokenizer", "bpe",
            "--vocab-size", "300"]
    result = CliRunner().invoke(data_group, args, env=env)
    assert result.exit_code == 0, result.output
    assert "c4: train 400 · val" in result.output and str(data_dir / "c4") in result.output
    assert data.read_manifest("c4", data_dir)["splits"]["train"]["tokens"] == 400
    again = CliRunner().invoke(data_group, args, env=env)
    assert "already prepared" in again.output  # same request: nothing downloaded or tokenized again
    listing = CliRunner().invoke(data_group, ["list", "--data-dir", str(data_dir)], env=WIDE)
    row = next(line for line in listing.output.splitlines() if " c4 " in line)
    assert "train 400" in row and "bpe vocab 300" in row and "sha256" in row and "recorded" in row


def test_prepare_cifar10_verifies_the_published_md5(cifar_server, data_dir):
    result = CliRunner().invoke(data_group, ["prepare", "cifar10", "--data-dir", str(data_dir),
                                             "--mirror", cifar_server.url + "/~kriz"])
    assert isinstance(result.exception, UsageError)  # the main CLI prints it as one line, exit code 2
    assert "checksum mismatch" in str(result.exception) and "c58f30108f718f92721af3b95e74349a" in str(result.exception)


def test_prepare_rejects_unknown_names_and_text_options_for_images(data_dir):
    unknown = CliRunner().invoke(data_group, ["prepare", "mnist", "--data-dir", str(data_dir)])
    assert isinstance(unknown.exception, UsageError) and "known: c4, cifar10, wikitext103" in str(unknown.exception)
    tokens = CliRunner().invoke(data_group, ["prepare", "cifar10", "--data-dir", str(data_dir), "--tokens", "5"])
    assert isinstance(tokens.exception, UsageError) and "text datasets" in str(tokens.exception)


def test_importing_the_cli_is_cheap():
    code = ("import sys, optbench.cli.data, optbench.data; "
            "heavy = [m for m in ('numpy', 'torch', 'pandas', 'rich', 'tokenizers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
