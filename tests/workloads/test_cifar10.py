"""The cifar10 workload on generated data in the prepared format: a few hundred learnable images."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.api import Task, TrialInfo
from optbench.errors import DataMissingError
from optbench.plugins.registry import check_workload
from optbench_submissions.adamw import adamw
from optbench_workloads._resnet import build_model
from optbench_workloads.cifar10 import SIZES, random_crop_flip, workload

CPU = torch.device("cpu")
# A narrow network for the training tests: the tiers' own nets are exercised by the smoke test.
FAST = dataclasses.replace(SIZES["tiny"], options={**SIZES["tiny"].options, "widths": (8, 8, 16, 16)})


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Run these small-tensor tests on one intra-op thread: on a shared 2-core machine, OpenMP barriers between two
    threads cost more than the work itself (BatchNorm on a (16, 8, 32, 32) batch: 100 ms with 2 threads, 2 ms
    with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_cifar(root: Path, *, n_train: int = 256, n_val: int = 128, seed: int = 0) -> Path:
    """Write CIFAR-10-format arrays and a manifest under ``root/cifar10``; images are class colour + noise."""
    folder = root / "cifar10"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (10, 1, 1, 3))
    files = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", 32)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.clip(palette[y] + rng.normal(0, 40, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
        for key, array in (("x", x), ("y", y)):
            path = folder / f"{split}_{key}.npy"
            np.save(path, array, allow_pickle=False)
            files[path.name] = {"bytes": path.stat().st_size, "shape": list(array.shape), "dtype": str(array.dtype)}
    manifest = {"format_version": 1, "name": "cifar10", "kind": "images", "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def task(data_dir: Path) -> Task:
    return workload.setup(FAST, device=CPU, data_dir=data_dir)


def test_workload_fits_the_api() -> None:
    check_workload(workload, "cifar10")
    assert workload.metric.name == "val_accuracy" and workload.metric.goal.value == "max"
    for name, size in workload.sizes.items():
        assert size.dataset == "cifar10" and size.note, name
        assert size.step_hint <= size.budget.max_steps


def test_tiny_tier_runs_the_protocol(data_dir: Path) -> None:
    task = workload.setup(workload.sizes["tiny"], device=CPU, data_dir=data_dir)
    assert isinstance(task, Task)
    model = task.init_model(torch.Generator().manual_seed(0))
    batch = task.next_batch(8, torch.Generator().manual_seed(0))
    assert batch.x.shape == (8, 3, 32, 32) and batch.y.dtype == torch.int64
    loss = task.loss(model, batch)
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in model.parameters())
    assert task.counts(batch) == (8, 8)


def test_initial_loss_is_near_log_classes(task: Task) -> None:
    model = task.init_model(torch.Generator().manual_seed(0))
    loss = float(task.loss(model, task.next_batch(64, torch.Generator().manual_seed(1))).detach())
    assert abs(loss - math.log(10)) < 0.3


def test_resnet18_initial_logits_are_moderate() -> None:
    model = build_model("resnet18", widths=(8,), bn_momentum=0.1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert abs(float(loss) - math.log(10)) < 1.0


def test_adamw_steps_reduce_the_loss(task: Task) -> None:
    torch.manual_seed(0)
    model = task.init_model(torch.Generator().manual_seed(0))
    info = TrialInfo(workload="cifar10", size="test", step_hint=15, max_steps=15, batch_size=16, device="cpu", seed=0)
    opt = adamw.create(model, dict(adamw.defaults), info)
    model.eval()
    before = task.evaluate(model)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        task.loss(model, task.next_batch(16, gen)).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    after = task.evaluate(model)
    assert after["val_loss"] < before["val_loss"] - 0.2
    assert after["val_accuracy"] > 0.2  # the colours are learnable; chance is 0.1


def test_evaluate_reports_accuracy_and_loss_in_eval_mode(task: Task) -> None:
    model = task.init_model(torch.Generator().manual_seed(0))
    model.eval()
    buffers = [b.clone() for b in model.buffers()]
    first, second = task.evaluate(model), task.evaluate(model)
    assert set(first) >= {"val_accuracy", "val_loss"} and 0.0 <= first["val_accuracy"] <= 1.0
    assert first == second  # eval mode: running statistics used, not updated
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))


def test_same_seed_same_batches(task: Task) -> None:
    a = task.next_batch(16, torch.Generator().manual_seed(3))
    b = task.next_batch(16, torch.Generator().manual_seed(3))
    c = task.next_batch(16, torch.Generator().manual_seed(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_same_seed_same_model(task: Task) -> None:
    m1, m2 = (task.init_model(torch.Generator().manual_seed(5)) for _ in range(2))
    m3 = task.init_model(torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(m1.parameters(), m3.parameters(), strict=True))


def test_augmentation_keeps_shapes_and_labels(task: Task) -> None:
    # Each augmented image is a (possibly mirrored) crop of its reflection-padded source; the label is the source's.
    idx = torch.randint(0, len(task.train_y), (32,), generator=torch.Generator().manual_seed(0))
    batch = task.next_batch(32, torch.Generator().manual_seed(0))  # its first draw picks the same images
    assert batch.x.shape == (32, 3, 32, 32)
    assert torch.equal(batch.y, task.train_y[idx])
    src = task.train_x[idx]
    for i in range(32):
        assert any(torch.equal(batch.x[i], crop) for crop in _all_crops(src[i], task.pad)), f"image {i}"


def _all_crops(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(img[None], (pad,) * 4, mode="reflect")[0]
    crops = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + 32, dx:dx + 32]
            crops += [crop, crop.flip(2)]
    return crops


def test_random_crop_flip_with_zero_pad_only_flips() -> None:
    x = torch.randn(16, 3, 32, 32)
    out = random_crop_flip(x, 0, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(16):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))


def test_sampled_loss_draws_labels_from_the_model(task: Task) -> None:
    model = task.init_model(torch.Generator().manual_seed(0))
    batch = task.next_batch(32, torch.Generator().manual_seed(0))
    a = task.sampled_loss(model, batch, torch.Generator().manual_seed(1))
    b = task.sampled_loss(model, batch, torch.Generator().manual_seed(1))
    a.backward()
    assert torch.isfinite(a) and a.item() == b.item()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_missing_data_names_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"optbench data prepare cifar10 --data-dir"):
        workload.setup(workload.sizes["tiny"], device=CPU, data_dir=tmp_path)


def test_a_trial_runs_through_the_harness(data_dir: Path, tmp_path: Path) -> None:
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, run_trial

    cfg = TrialConfig(size="tiny", max_steps=2, eval_every_steps=1, data_dir=data_dir)
    result = run_trial(load_workload("optbench_workloads.cifar10:workload"), load_submission("adamw"), cfg,
                       results_dir=tmp_path)
    assert result.record.outcome in ("missed", "reached")
    assert result.rows[-1].step == 2 and result.rows[-1].examples == 2 * SIZES["tiny"].batch_size
    assert 0.0 <= result.rows[-1].metric_value <= 1.0
