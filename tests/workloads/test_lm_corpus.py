"""The ``lm`` workload on any prepared text dataset (``--size TIER@NAME``): the vocabulary is the dataset's, the
targets are marked uncalibrated, and a corpus too small for a calibrated tier is pointed to a command that works."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from optbench import data
from optbench.cli import main
from optbench.errors import DataMissingError, UsageError
from optbench.plugins.registry import check_workload, load_workload
from optbench_workloads import lm as lm_module
from optbench_workloads.lm import LM_WORKLOAD, lm, wikitext
from tests.data.conftest import write_text_corpus

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user corpus prepared for real (about 120 KB of text: a BPE of fewer than 8192 ids)."""
    root = tmp_path_factory.mktemp("data")
    files = write_text_corpus(root / "text", train_articles=200, valid_articles=20)
    data.prepare_user_text("mine", train=files["train"], valid=files["valid"], data_dir=root / "prepared")
    return root / "prepared"


def test_sizes_name_their_dataset_and_say_they_are_uncalibrated() -> None:
    check_workload(lm, "lm")
    assert list(lm.sizes) == ["tiny", "small", "paper"] and lm.default_size == "tiny"
    size = lm.sizes["tiny@mine"]
    assert size.name == "tiny@mine" and size.dataset == "mine" and "tiny@mine" in lm.sizes
    assert size.note.startswith("UNCALIBRATED for mine")
    assert "tokenizer" not in size.options and "vocab" not in size.options
    tier = wikitext.sizes["tiny"]
    assert (size.target, size.batch_size, size.budget, size.options["d_model"]) == (
        tier.target, tier.batch_size, tier.budget, tier.options["d_model"])
    assert lm.sizes["paper@c4"].dataset == "c4" and "min_train_tokens" not in lm.sizes["paper@c4"].options
    for bad in ("huge@mine", "tiny@../x", "tiny@", "tiny@c4/x", "tiny@cifar10"):
        assert bad not in lm.sizes
    with pytest.raises(KeyError):
        lm.sizes["tiny@cifar 10"]


def test_the_vocabulary_is_the_datasets(data_dir: Path) -> None:
    vocab = data.vocab_size("mine", data_dir)
    assert vocab < 8192  # the corpus is too small for the calibrated tiers' BPE
    task = lm.setup(lm.sizes["tiny@mine"], device=CPU, data_dir=data_dir)
    model = task.init_model(torch.Generator().manual_seed(0))
    assert model.embed.weight.shape[0] == vocab
    loss = float(task.loss(model, task.next_batch(8, torch.Generator().manual_seed(0))).detach())
    assert abs(loss - math.log(vocab)) < 0.1  # near uniform over the dataset's own ids


def test_a_tier_without_a_dataset_says_how_to_name_one(data_dir: Path) -> None:
    with pytest.raises(UsageError, match=r"--size tiny@NAME"):
        lm.setup(lm.sizes["tiny"], device=CPU, data_dir=data_dir)
    with pytest.raises(DataMissingError, match=r"optbench data prepare text --name other"):
        lm.setup(lm.sizes["tiny@other"], device=CPU, data_dir=data_dir)


def _copy_as(data_dir: Path, name: str, tmp_path: Path) -> Path:
    """``mine`` as if it were the published ``name`` prepared by ``optbench data prepare name`` (same files, the
    catalog's manifest shape: no user-supplied source, the request that asked for 8192 ids)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_dir / "mine", root / name)
    path = root / name / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("source", "verified", "sources", "archive"):
        manifest.pop(key)
    manifest.update(name=name, params={"tokens": None, "tokenizer": "bpe", "vocab_size": 8192})
    path.write_text(json.dumps(manifest))
    return root


def test_a_corpus_too_small_for_its_tier_gets_a_command_that_works(data_dir: Path, tmp_path: Path) -> None:
    root = _copy_as(data_dir, "wikitext103", tmp_path)
    with pytest.raises(DataMissingError) as err:
        wikitext.setup(wikitext.sizes["tiny"], device=CPU, data_dir=root)
    message = str(err.value)
    assert "yields only" in message and "--vocab-size 8192" not in message  # re-preparing would not help
    command = message.split("with: ", 1)[1]
    args = shlex.split(command)
    assert args[:3] == ["optbench", "run", "-w"] and "tiny@wikitext103" in args
    r = CliRunner().invoke(main, [*args[1:], "--max-steps", "2", "--quiet", "--results-dir", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "r").rglob("*.parquet"))) == 1


def test_another_tokenizer_still_suggests_re_preparing_and_the_uncalibrated_run(data_dir: Path,
                                                                                 tmp_path: Path) -> None:
    root = _copy_as(data_dir, "c4", tmp_path)
    with pytest.raises(DataMissingError, match=r"--tokenizer gpt2 --force \(or train uncalibrated: optbench run "
                                               rf"-w \S+ --size paper@c4 --data-dir {root}\)"):
        lm_module.c4.setup(lm_module.c4.sizes["paper"], device=CPU, data_dir=root)


def test_the_workload_loads_by_its_documented_spec() -> None:
    loaded = load_workload(LM_WORKLOAD)
    assert loaded.obj is lm or loaded.obj.name == "lm"
    assert "tiny@mine" in loaded.obj.sizes


def test_a_corpus_shorter_than_one_window_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a few words only\n", encoding="utf-8")
    files = write_text_corpus(tmp_path, train_articles=1, valid_articles=10)  # a long enough validation text
    prep = CliRunner().invoke(main, ["data", "prepare", "text", "--name", "wee", "--train", str(tmp_path / "t.txt"),
                                     "--valid", str(files["valid"]), "--data-dir", str(tmp_path / "d")])
    assert prep.exit_code == 0, prep.output
    r = CliRunner().invoke(main, ["run", "-w", LM_WORKLOAD, "--size", "tiny@wee", "--data-dir", str(tmp_path / "d"),
                                  "--results-dir", str(tmp_path / "r"), "--quiet"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "train split has" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
