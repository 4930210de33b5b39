"""Diagnostics on a language model: the Hessian-vector product's double backward goes through attention and the
chunked, checkpointed LM loss, and it and the noise-scale gradients are accumulated over the trial's micro-batches.

The fused SDPA kernels (flash, memory-efficient, the CPU flash kernel) have no double backward, so the HVP runs
attention on the math backend; without it ``--diagnostics`` on any LM workload ends as ``error`` at step 0. The
micro-batched HVP (sum_i w_i H_i v, w_i the micro-batch's share of the tokens) and noise-scale gradients equal the
one-pass ones up to float rounding, on uneven micro-batches too (5 windows in micro-batches of 2, 2, 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from optbench.api import Task, named_params
from optbench.cli import main
from optbench.engine import diagnostics
from optbench.engine.diagnostics import Diagnostics, gradient_noise_scale, hessian_vector_product, micro_batches
from optbench.store.reader import read_results
from optbench_workloads import _loss
from optbench_workloads.lm import wikitext
from tests.workloads.test_lm import VOCAB, markov_corpus, write_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster

SEQ = wikitext.sizes["tiny"].options["seq_len"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    corpus = markov_corpus(12_000)
    return write_tokens(root, "wikitext103", train=corpus[:10_000], val=corpus[10_000:])


@pytest.fixture(scope="module")
def task(data_dir: Path) -> Task:
    return wikitext.setup(wikitext.sizes["tiny"], device=torch.device("cpu"), data_dir=data_dir)


@pytest.fixture(scope="module")
def model(task: Task) -> torch.nn.Module:
    return task.init_model(torch.Generator().manual_seed(0)).eval()


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for _, p in named_params(model)]


def _direction(params: list[torch.Tensor]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(p.shape, generator=g) for p in params]


def _hvp(task: Task, model: torch.nn.Module, batch: Any, micro: int | None) -> list[torch.Tensor]:
    params = _params(model)
    pieces = [(lambda mb=mb: task.loss(model, mb), w) for mb, w in micro_batches(task, batch, micro)]
    return hessian_vector_product(pieces, params, _direction(params))


def _rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    diff = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b))
    return math.sqrt(diff / sum(float(y.pow(2).sum()) for y in b))


def test_diagnostics_measure_a_language_model(task: Task, model: torch.nn.Module) -> None:
    got = Diagnostics(task, seed=0, batch_size=4, micro_batch_size=2, noise_batches=2, iters=3).measure(model,
                                                                                                        lr=1e-3)
    assert math.isfinite(got["sharpness"]) and got["sharpness"] != 0.0
    assert got["eos_threshold"] == pytest.approx(2000.0)
    assert math.isfinite(got["grad_sq"]) and math.isfinite(got["trace_cov"])


def test_micro_batched_hvp_equals_the_one_pass_hvp(task: Task, model: torch.nn.Module) -> None:
    batch = task.next_batch(5, torch.Generator().manual_seed(1))
    assert [w for _, w in micro_batches(task, batch, 2)] == pytest.approx([0.4, 0.4, 0.2])
    one, micro = _hvp(task, model, batch, None), _hvp(task, model, batch, 2)
    assert sum(float(h.abs().sum()) for h in one) > 0
    assert _rel_err(micro, one) < 1e-4


def test_hvp_through_the_chunked_checkpointed_loss(task: Task, model: torch.nn.Module,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The non-reentrant checkpoint of each loss chunk is recomputed inside the first backward, under create_graph.
    batch = task.next_batch(2, torch.Generator().manual_seed(2))
    plain = _hvp(task, model, batch, None)
    calls, real = [], _loss.checkpoint

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_loss, "LOSS_CHUNK_ELEMENTS", SEQ * VOCAB)  # one window's rows per chunk: two chunks
    monkeypatch.setattr(_loss, "checkpoint", counted)
    chunked = _hvp(task, model, batch, None)
    assert calls == [False, False]
    assert _rel_err(chunked, plain) < 1e-4


def test_micro_batched_noise_scale_equals_the_one_pass_one(task: Task, model: torch.nn.Module) -> None:
    def noise(micro: int | None) -> dict[str, float]:
        return gradient_noise_scale(task, model, batch_size=5, batches=2, generator=torch.Generator().manual_seed(3),
                                    micro_batch_size=micro)

    one, micro = noise(None), noise(2)
    for key in ("grad_sq", "trace_cov"):
        assert micro[key] == pytest.approx(one[key], rel=1e-4), key


def test_run_with_diagnostics_on_an_lm_uses_the_trials_micro_batches(data_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = []
    real = diagnostics.micro_batches
    monkeypatch.setattr(diagnostics, "micro_batches", lambda t, b, micro: sizes.append(micro) or real(t, b, micro))
    res = CliRunner().invoke(main, [
        "run", "-w", "lm", "--size", "tiny@wikitext103", "-s", "adamw", "--max-steps", "2", "--diagnostics", "--device",
        "cpu", "--batch-size", "4", "--micro-batch-size", "2", "--noise-batches", "2", "--iters", "2", "--quiet",
        "--data-dir", str(data_dir), "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    results = read_results(tmp_path)
    (outcome,) = results.trials["outcome"]
    assert outcome == "missed", results.trials["error"].iloc[0]
    metrics = [json.loads(m) for m in results.evals["metrics_json"]]
    assert len(metrics) == 2 and all(math.isfinite(m["sharpness"]) for m in metrics)
    assert sizes and set(sizes) == {2}  # the fixed batch and each noise-scale batch, in the trial's micro-batches
