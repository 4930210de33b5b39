"""The wikitext and c4 workloads on generated token files in the prepared format (a synthetic Markov corpus)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.api import Task, TrialInfo
from optbench.data.synthetic import EOT, VOCAB, markov_corpus, write_tokens  # noqa: F401 (tests import them here)
from optbench.errors import DataMissingError
from optbench.plugins.registry import check_workload
from optbench_submissions.adamw import adamw
from optbench_workloads import lm
from optbench_workloads.lm import c4, validation_windows, wikitext

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Run these small-tensor tests on one intra-op thread: on a shared 2-core machine, OpenMP barriers between two
    threads cost more than the work itself (BatchNorm on a (16, 8, 32, 32) batch: 100 ms with 2 threads, 2 ms
    with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return markov_corpus(60_000)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, corpus: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in ("wikitext103", "c4"):
        write_tokens(root, name, train=corpus[:50_000], val=corpus[50_000:])
    return root


@pytest.fixture(scope="module")
def task(data_dir: Path) -> Task:
    return wikitext.setup(wikitext.sizes["tiny"], device=CPU, data_dir=data_dir)


def test_workloads_fit_the_api() -> None:
    for w, dataset in ((wikitext, "wikitext103"), (c4, "c4")):
        check_workload(w, w.name)
        assert w.metric.name == "val_loss" and w.metric.goal.value == "min"
        for size in w.sizes.values():
            assert size.dataset == dataset and size.note and size.step_hint <= size.budget.max_steps
    paper = c4.sizes["paper"].options
    assert (paper["n_layer"], paper["d_model"], paper["n_head"], paper["seq_len"]) == (12, 768, 12, 1024)


def test_tiny_tier_runs_the_protocol(task: Task) -> None:
    assert isinstance(task, Task)
    model = task.init_model(torch.Generator().manual_seed(0))
    batch = task.next_batch(4, torch.Generator().manual_seed(0))
    seq = wikitext.sizes["tiny"].options["seq_len"]
    assert batch.inputs.shape == batch.targets.shape == (4, seq) and batch.inputs.dtype == torch.int64
    loss = task.loss(model, batch)
    loss.backward()
    assert loss.ndim == 0
    assert task.counts(batch) == (4, 4 * seq)


def test_initial_loss_is_near_log_vocab(task: Task) -> None:
    model = task.init_model(torch.Generator().manual_seed(0))
    loss = float(task.loss(model, task.next_batch(8, torch.Generator().manual_seed(0))).detach())
    assert abs(loss - math.log(VOCAB)) < 0.05
    model.eval()
    assert abs(task.evaluate(model)["val_loss"] - math.log(VOCAB)) < 0.05


def test_batches_are_windows_of_the_train_file(task: Task, corpus: np.ndarray) -> None:
    batch = task.next_batch(8, torch.Generator().manual_seed(2))
    assert torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:])
    train = corpus[:50_000]
    for row_in, row_out in zip(batch.inputs.numpy(), batch.targets.numpy(), strict=True):
        starts = np.flatnonzero(train[: len(train) - len(row_in)] == row_in[0])
        assert any(np.array_equal(train[s:s + len(row_in)], row_in) and train[s + len(row_in)] == row_out[-1]
                   for s in starts)


def test_same_seed_same_batches(task: Task) -> None:
    a = task.next_batch(8, torch.Generator().manual_seed(3))
    b = task.next_batch(8, torch.Generator().manual_seed(3))
    c = task.next_batch(8, torch.Generator().manual_seed(4))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_memory_mapped_source_draws_the_same_batches(data_dir: Path, task: Task,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm, "RESIDENT_MAX_TOKENS", 0)  # force the large-file path
    mapped = wikitext.setup(wikitext.sizes["tiny"], device=CPU, data_dir=data_dir)
    assert isinstance(mapped.train, lm.MappedTokens) and isinstance(task.train, lm.ResidentTokens)
    a = task.next_batch(8, torch.Generator().manual_seed(5))
    b = mapped.next_batch(8, torch.Generator().manual_seed(5))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_adamw_steps_reduce_the_loss(data_dir: Path) -> None:
    size = dataclasses.replace(c4.sizes["tiny"], options={**c4.sizes["tiny"].options, "seq_len": 32})
    task = c4.setup(size, device=CPU, data_dir=data_dir)
    torch.manual_seed(0)
    model = task.init_model(torch.Generator().manual_seed(0))
    info = TrialInfo(workload="c4", size="test", step_hint=8, max_steps=8, batch_size=8, device="cpu", seed=0)
    opt = adamw.create(model, dict(adamw.defaults), info)
    model.eval()
    before = task.evaluate(model)["val_loss"]
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        task.loss(model, task.next_batch(8, gen)).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    after = task.evaluate(model)
    assert after["val_loss"] < before - 1.0
    assert after["val_perplexity"] == pytest.approx(math.exp(after["val_loss"]))


def test_validation_uses_the_first_non_overlapping_windows() -> None:
    tokens = np.arange(100)
    x, y = validation_windows(tokens, seq_len=8, count=3)
    assert x.shape == y.shape == (3, 8)
    assert x[1].tolist() == list(range(8, 16)) and y[1].tolist() == list(range(9, 17))
    x, _ = validation_windows(tokens, seq_len=8, count=1000)
    assert len(x) == 12  # (100 - 1) // 8 windows fit
    with pytest.raises(Exception, match="fewer than one window"):
        validation_windows(tokens[:8], seq_len=8, count=1)


def test_sampled_loss_draws_targets_from_the_model(task: Task) -> None:
    model = task.init_model(torch.Generator().manual_seed(0))
    batch = task.next_batch(4, torch.Generator().manual_seed(0))
    a = task.sampled_loss(model, batch, torch.Generator().manual_seed(1))
    b = task.sampled_loss(model, batch, torch.Generator().manual_seed(1))
    a.backward()
    assert torch.isfinite(a) and a.item() == b.item()
    assert abs(float(a.detach()) - math.log(VOCAB)) < 0.1  # the model is near uniform at init
    assert model.embed.weight.grad is not None


def test_uint32_token_files_are_read(tmp_path: Path, corpus: np.ndarray) -> None:
    write_tokens(tmp_path, "c4", train=corpus[:5_000], val=corpus[5_000:7_000], dtype="uint32")
    task = c4.setup(c4.sizes["tiny"], device=CPU, data_dir=tmp_path)
    batch = task.next_batch(2, torch.Generator().manual_seed(0))
    assert int(batch.inputs.max()) < VOCAB


def test_missing_data_names_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"optbench data prepare wikitext103 --data-dir"):
        wikitext.setup(wikitext.sizes["tiny"], device=CPU, data_dir=tmp_path)
    with pytest.raises(DataMissingError, match=r"optbench data prepare c4 --data-dir"):
        c4.setup(c4.sizes["tiny"], device=CPU, data_dir=tmp_path)


def test_another_tokenizer_is_refused_with_the_fix(tmp_path: Path, corpus: np.ndarray) -> None:
    write_tokens(tmp_path, "c4", train=corpus[:5_000], val=corpus[5_000:7_000], kind="bpe", vocab=8192)
    with pytest.raises(DataMissingError, match=r"--tokenizer gpt2 --force"):
        c4.setup(c4.sizes["paper"], device=CPU, data_dir=tmp_path)


def test_too_few_train_tokens_for_the_paper_tier(tmp_path: Path, corpus: np.ndarray) -> None:
    gpt2_ids = corpus[:5_000] * 6  # any ids below 50257
    write_tokens(tmp_path, "c4", train=gpt2_ids, val=gpt2_ids, kind="gpt2", vocab=50257)
    with pytest.raises(DataMissingError, match=r"--tokens 2500000000 --force"):
        c4.setup(c4.sizes["paper"], device=CPU, data_dir=tmp_path)


def test_a_trial_runs_through_the_harness(data_dir: Path, tmp_path: Path) -> None:
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, run_trial

    cfg = TrialConfig(size="tiny", max_steps=3, eval_every_steps=2, data_dir=data_dir)
    result = run_trial(load_workload("optbench_workloads.lm:c4"), load_submission("adamw"), cfg,
                       results_dir=tmp_path)
    assert result.record.outcome == "missed"
    assert result.rows[-1].step == 3 and result.rows[-1].tokens == 3 * 16 * 64
    assert math.isfinite(result.rows[-1].metric_value) and "val_perplexity" in result.rows[-1].metrics_json
