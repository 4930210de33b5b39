"""No host synchronisation inside a steady-state step: every registered submission on every workload.

A step that reads a device value back to the host (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``, a copy to
the host) or calls an op whose CUDA kernel does so itself (``multinomial``'s input checks, ``linalg.eigh``'s status
check, ``nonzero``...) makes the host wait for every kernel queued before it, and the device then idles while the
host queues the rest of the step. The README's timing rule: nothing waits for the device between stretch ends.

What is counted inside the counted steps (:class:`HostReads`):
  * dispatches of the ops in ``SYNCING_OPS`` (each with why it waits on CUDA), seen by a ``TorchDispatchMode``, with
    the file:line outside torch that called them; boolean-mask indexing (``nonzero`` inside the kernel);
  * ``Tensor.tolist``, which dispatches nothing on the CPU, by a patched method;
  * on CUDA also: copies to the host, blocking copies from pageable host memory (they wait for the stream), and
    what ``torch.cuda.set_sync_debug_mode`` reports.
On the CPU every tensor is a host tensor, so a read of a tensor kept on the host on purpose looks like a device read.
The one such kind in the repository is the optimizers' step counter (``state[p]["step"]``, a 0-d CPU tensor:
torch.optim's convention, read with ``int()`` every step): those are exempt, by identity. On CUDA the rule is exact
instead (a read of a CPU tensor is exempt, any other is counted).
``test_optimizer_steps_on_another_device_read_nothing`` runs every optimizer on the meta device, where a read of a
device value cannot pass unseen, and checks there that the exempt counters are host tensors indeed.

Steady state: the first step is not counted (lazily created state, SOAP's first eigendecomposition, DoG's
starting point); the next ``COUNTED`` are, which hold every periodic event at the default period of 10: Shampoo's
first roots at step 10, SOAP's first basis refresh and Sophia's second Hessian estimate at step 11.

Allowances (``ALLOWED``), each exact (the count must equal it) and with its reason: Shampoo's roots.

Workloads: linreg, teacher, the LM (``wikitext`` tiny on synthetic tokens, in micro-batches; ``c4`` and ``lm`` are
the same task), its memory-mapped route, cifar10 tiny (narrowed) on generated images. What the CPU cannot show (a
``.cpu()``/``.numpy()`` of a device tensor is a no-op on a CPU trial) is pinned where it was: the memory-mapped route
with a stand-in CUDA generator that no torch op accepts. The last tests pin the fixes the count relies on (the
host-drawn offsets, Gumbel-max labels) and the float32 head logits that came with the loss changes (E1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from optbench.api import Capability, TrialInfo
from optbench.engine.loop import TrialLoop
from optbench.engine.prepared import TrialConfig, prepare
from optbench.plugins.registry import entry_points, load_submission, load_workload
from optbench_submissions._linalg import matrix_shape
from optbench_workloads import lm
from optbench_workloads._loss import gumbel_max, head_cross_entropy, head_inputs, head_logits, sample_targets
from tests.workloads.test_cifar10 import write_cifar

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster

aten = torch.ops.aten
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # on a GPU machine, the real thing
COUNTED = 11  # steps 2..12

# Ops that make the host wait for the device, and why.
SYNCING_OPS = {
    aten._local_scalar_dense: ".item(), float(t), int(t), bool(t), `if t:` read a device value",
    aten.nonzero: "its output size depends on the values",
    aten.masked_select: "its output size depends on the values",
    aten._unique2: "its output size depends on the values",
    aten.unique_consecutive: "its output size depends on the values",
    aten.unique_dim: "its output size depends on the values",
    aten.multinomial: "CUDA checks the probabilities with two .item() calls",
    aten._linalg_eigh: "CUDA checks the solver's status with .item() (torch.linalg.eigh has no _ex form)",
    aten._linalg_svd: "CUDA checks the solver's status with .item()",
    aten._linalg_check_errors: "the status check of a linalg op without _ex",
    aten.equal: "returns a Python bool",
    aten.is_nonzero: "returns a Python bool",
}


class Read(NamedTuple):
    step: int
    op: str
    where: str


MACHINERY = {"_where", "record", "__torch_dispatch__", "_check_copy", "tolist"}  # this module's counting frames


def _where() -> str:
    """path:line of the innermost frame outside torch and the counting: the code that asked for the read."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if "/torch/" not in name and frame.f_code.co_name not in MACHINERY:
            return f"{'/'.join(name.split('/')[-2:])}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _host_only(t: Any, exempt: set[int]) -> bool:
    """Whether reading ``t`` leaves the device alone: a CPU tensor on a GPU trial, an exempt counter on a CPU one."""
    if not isinstance(t, torch.Tensor):
        return True
    if DEVICE.type != "cpu" and t.device.type != "meta":
        return t.device.type == "cpu"
    return t.device.type == "cpu" and t.data_ptr() in exempt


class HostReads(TorchDispatchMode):
    """Records every host read (module docstring) made while :attr:`step` is set, as :class:`Read` s."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[Read] = []
        self.exempt: set[int] = set()  # data_ptr of the optimizers' host step counters
        self.step: int | None = None

    def record(self, op: str) -> None:
        if self.step is not None:
            self.reads.append(Read(self.step, op, _where()))

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in SYNCING_OPS and not (packet is aten._local_scalar_dense and _host_only(args[0], self.exempt)):
            self.record(str(func))
        elif packet in (aten.index, aten.index_put, aten.index_put_) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.record(f"{func} (boolean mask)")
        elif packet in (aten._to_copy, aten.copy_) and DEVICE.type == "cuda":
            self._check_copy(func, args, kwargs)
        return func(*args, **kwargs)

    def _check_copy(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """On CUDA: a copy to the host, or a blocking one from pageable host memory, waits for the stream."""
        if func.overloadpacket is aten.copy_:
            src, target = args[1], args[0].device
            blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        else:
            src, target = args[0], torch.device(kwargs.get("device") or args[0].device)
            blocking = not kwargs.get("non_blocking", False)
        if src.device.type != "cpu" and target.type == "cpu":
            self.record(f"{func} (to the host)")
        elif src.device.type == "cpu" and target.type != "cpu" and blocking and not src.is_pinned():
            self.record(f"{func} (blocking, from pageable memory)")


@contextlib.contextmanager
def host_reads() -> Iterator[HostReads]:
    """A :class:`HostReads` active for the block, with ``Tensor.tolist`` counted too (and, on CUDA, the sync debug
    mode's warnings)."""
    mode = HostReads()
    original = torch.Tensor.tolist

    def tolist(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not _host_only(self, mode.exempt):
            mode.record("Tensor.tolist")
        return original(self, *args, **kwargs)

    torch.Tensor.tolist = tolist  # type: ignore[method-assign]
    try:
        with mode, warnings.catch_warnings(record=True) as caught:
            if DEVICE.type == "cuda":
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            yield mode
    finally:
        torch.Tensor.tolist = original  # type: ignore[method-assign]
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            mode.reads += [Read(-1, "cuda sync debug mode", str(w.message)[:200]) for w in caught
                           if "synchroniz" in str(w.message)]


def host_counters(updater: Any) -> set[int]:
    """data_ptr of every ``step`` tensor in the updater's state (its state_dict holds the live tensors)."""
    found: set[int] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "step" and isinstance(value, torch.Tensor):
                    found.add(value.data_ptr())
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(updater.state_dict())
    return found


# ------------------------------------------------------------------------------------------------ the trials

LM_VOCAB = 512  # the tiny LM with a small vocabulary: the same code paths, a tenth of the CPU time
NARROW = {"widths": (8, 8, 16, 16)}  # cifar10's tiny net, narrowed: the same layers


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data"), n_train=64, n_val=16)


def trial(workload: str, submission: str, *, tmp: Path, cifar_dir: Path, mapped: bool = False,
          plugin: Any = None) -> TrialLoop:
    """A trial loop on ``DEVICE`` with small batches: LM tiny on synthetic tokens (micro-batches of 4), cifar10 tiny
    narrowed on generated images; ``mapped``: the LM's train tokens read from a memory map."""
    micro = 4 if workload == "wikitext" else None
    prep = prepare(load_workload(workload), plugin or load_submission(submission),
                   TrialConfig(device=str(DEVICE), batch_size=8, micro_batch_size=micro, sync_every=1000,
                               max_steps=1000, eval_every_steps=1000), results_dir=tmp)
    if workload == "wikitext":
        size = dataclasses.replace(prep.size, options={**prep.size.options, "vocab": LM_VOCAB})
        tokens = np.random.default_rng(0).integers(0, LM_VOCAB, 20_000)
        with pytest.MonkeyPatch.context() as mp:
            if mapped:
                mp.setattr(lm, "RESIDENT_MAX_TOKENS", 0)
            task = lm.LMTask(size, DEVICE, train=tokens[:16_000], val=tokens[16_000:], vocab_size=LM_VOCAB)
    elif workload == "cifar10":
        size = dataclasses.replace(prep.size, options={**prep.size.options, **NARROW})
        task = prep.workload.obj.setup(size, device=DEVICE, data_dir=cifar_dir)
    else:
        size = prep.size
        task = prep.workload.obj.setup(size, device=DEVICE, data_dir=None)
    return TrialLoop(prep=dataclasses.replace(prep, size=size), task=task, observer=None,
                     wall_start=time.perf_counter())


def steady_reads(loop: TrialLoop) -> list[Read]:
    """The host reads of steps 2..COUNTED + 1, taken as one stretch (the clock running, no loss read)."""
    loop.state.clock.run()
    loop.step()  # set-up: not counted
    with host_reads() as mode:
        mode.exempt = host_counters(loop.state.updater)
        for i in range(2, COUNTED + 2):
            mode.step = i
            loop.step()
        mode.step = None
    assert len(loop.pending) == COUNTED + 1  # every loss still on the device, unread
    return mode.reads


# ------------------------------------------------------------------------------------------------ allowances

def shampoo_roots(loop: TrialLoop) -> Counter:
    """Shampoo's inverse roots at step 10 (its default start_preconditioning_step and precondition_frequency):
    ``torch.linalg.eigh`` reads its solver's status back on CUDA, once per call, and that read is what lets a failed
    float32 decomposition fall back to float64. It cannot be avoided with eigh (there is no ``eigh_ex``); the factors
    are decomposed in one batch per distinct size (dtype, device), so exactly that many reads at a refresh, every
    ``precondition_frequency`` steps, and none at other steps."""
    group = loop.state.updater.param_groups[0]
    limit = group["max_precond_dim"]
    sizes = set()
    for p in loop.state.model.parameters():
        shape = matrix_shape(p)
        if shape is not None and min(shape) <= limit:
            sizes |= {(d, p.dtype) for d in shape if d <= limit}
    return Counter({(10, "aten._linalg_eigh.default"): len(sizes)})


ALLOWED: dict[str, Callable[[TrialLoop], Counter]] = {"shampoo": shampoo_roots}

SUBMISSIONS = sorted(entry_points("submissions"))
WORKLOADS = ["linreg", "teacher", "wikitext", "cifar10"]


def check(loop: TrialLoop, submission: str, reads: list[Read]) -> None:
    expected = ALLOWED.get(submission, lambda _: Counter())(loop)
    got = Counter((r.step, r.op) for r in reads)
    assert got == expected, (f"{submission}: host reads inside steady-state steps: {got} (allowed: {dict(expected)}); "
                             f"first: {reads[0] if reads else None}")


@pytest.mark.parametrize("submission", SUBMISSIONS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_steady_state_steps_read_nothing_back(workload: str, submission: str, tmp_path: Path,
                                              cifar_dir: Path) -> None:
    loop = trial(workload, submission, tmp=tmp_path, cifar_dir=cifar_dir)
    check(loop, submission, steady_reads(loop))


@pytest.mark.parametrize("submission", ["adamw", "sophia"])
def test_memory_mapped_tokens_read_nothing_back(submission: str, tmp_path: Path, cifar_dir: Path) -> None:
    loop = trial("wikitext", submission, tmp=tmp_path, cifar_dir=cifar_dir, mapped=True)
    assert isinstance(loop.task.train, lm.MappedTokens)
    check(loop, submission, steady_reads(loop))


PLANTS = {
    "tolist": lambda p: p.grad.tolist(),
    "item": lambda p: p.grad.sum().item(),
    "if": lambda p: bool(p.grad.sum() > 0),
    "multinomial": lambda p: torch.multinomial(p.grad.abs().flatten() + 1, 1),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_read_planted_in_a_step_is_counted(plant: str, tmp_path: Path, cifar_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The count is not blind: AdamW's step with one host read planted in it fails the check at every step."""
    from optbench_submissions.adamw import AdamW

    step = AdamW.step

    def planted(self: AdamW, closure: Any = None) -> Any:
        PLANTS[plant](self.param_groups[0]["params"][0])
        return step(self, closure)

    monkeypatch.setattr(AdamW, "step", planted)
    loop = trial("linreg", "adamw", tmp=tmp_path, cifar_dir=cifar_dir)
    reads = steady_reads(loop)
    assert [r.step for r in reads] == list(range(2, COUNTED + 2))
    assert all(r.where.startswith("tests/test_zero_sync.py:") for r in reads), reads[0]
    with pytest.raises(AssertionError, match="host reads inside steady-state steps"):
        check(loop, "adamw", reads)


def test_the_optimizer_step_counters_are_the_only_exemption(tmp_path: Path, cifar_dir: Path) -> None:
    """AdamW reads its step counter (a host tensor) at every step: exempt. The same read of any other tensor of the
    trial's device counts (on the CPU too, where the counter's exemption is by identity)."""
    loop = trial("linreg", "adamw", tmp=tmp_path, cifar_dir=cifar_dir)
    assert not steady_reads(loop)
    counters = host_counters(loop.state.updater)
    assert len(counters) == len(list(loop.state.model.parameters()))
    with host_reads() as mode:
        mode.step, mode.exempt = 1, counters
        int(next(iter(loop.state.updater.state.values()))["step"])
        int(torch.zeros((), device=DEVICE))
    assert [r.op for r in mode.reads if r.step == 1] == ["aten._local_scalar_dense.default"]


# ------------------------------------------------------------------------------------------------ optimizers on meta

class DeviceRead(AssertionError):
    """An optimizer read a value of a tensor that is not on the host."""


class MetaReads(TorchDispatchMode):
    """Fails a read of a non-host tensor: on the meta device no value exists, so nothing can pass unseen. Also fails
    a ``_foreach_*.Tensor`` op whose 0-d scalar differs in dtype from its float32/float64 list: CUDA then runs one
    kernel per tensor instead of one for the list (not a sync, but the launches the foreach form is there to save)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func.overloadpacket is aten._local_scalar_dense and args[0].device.type != "cpu":
            raise DeviceRead(f"{func} at {_where()}")
        if func._schema.name.startswith("aten::_foreach_") and func._overloadname == "Tensor":
            dtype = args[0][0].dtype
            if dtype in (torch.float32, torch.float64) and args[1].dtype != dtype:
                raise DeviceRead(f"{func} at {_where()}: a {args[1].dtype} scalar for {dtype} tensors")
        return func(*args, **(kwargs or {}))


def meta_model() -> nn.Module:
    """Matrices of three shapes sharing a side of 8 (several buckets, one factor size), a bias per layer."""
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize("submission", SUBMISSIONS)
def test_optimizer_steps_on_another_device_read_nothing(submission: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every submission's update on parameters on the meta device, 12 steps (the periodic events included): no
    value of a non-host tensor is read (``.item()`` & co. raise there, ``.tolist()`` too), and the step counters
    the CPU count exempts are host tensors."""
    spec = load_submission(submission).obj
    model = meta_model()
    info = TrialInfo(workload="linreg", size="tiny", step_hint=20, max_steps=40, batch_size=32, device="meta", seed=0)
    updater = spec.create(model, dict(spec.defaults), info)
    params = list(model.parameters())

    def closure(sampled: bool = False) -> torch.Tensor:
        for p in params:
            p.grad = torch.ones_like(p)
        return torch.zeros((), device="meta")

    original = torch.Tensor.tolist

    def tolist(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.device.type != "cpu":
            raise DeviceRead(f"Tensor.tolist at {_where()}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    with_closure = bool({Capability.CLOSURE, Capability.SAMPLED_LOSS} & spec.capabilities)
    with MetaReads():
        for _ in range(12):
            closure()
            if with_closure:
                updater.step(closure)
            else:
                updater.step()
            updater.zero_grad(set_to_none=True)
    counters = list(_step_tensors(updater.state_dict()))
    assert all(t.device.type == "cpu" for t in counters), f"{submission}: a step counter on {counters[0].device}"


def _step_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "step" and isinstance(value, torch.Tensor):
                yield value
            yield from _step_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _step_tensors(value)


# ------------------------------------------------------------------------------------------------ the fixes' pins

class CudaLikeGenerator:
    """What the memory-mapped route may touch of a CUDA generator: its device, seed and Philox offset (host-side
    values). It is no ``torch.Generator``: handing it to a torch op (a draw on the device, then a copy of the offsets
    to the host, as before) raises."""

    def __init__(self, seed: int, offset: int = 0) -> None:
        self.device, self.seed, self.offset = torch.device("cuda"), seed, offset

    def initial_seed(self) -> int:
        return self.seed

    def get_offset(self) -> int:
        return self.offset

    def set_offset(self, offset: int) -> None:
        assert offset % 4 == 0, "a CUDA generator's offset is a multiple of 4"
        self.offset = offset


def test_memory_mapped_batches_are_drawn_on_the_host_from_the_generators_state(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cifar_dir: Path) -> None:
    """C1: with a device generator, the mapped route never asks the device where to read; its batches are a function
    of the generator's (seed, offset), which a checkpoint restores, and each batch moves the offset on."""
    loop = trial("wikitext", "adamw", tmp=tmp_path, cifar_dir=cifar_dir, mapped=True)
    task = loop.task
    train, t = np.asarray(task.train.tokens), task.seq_len
    gen = CudaLikeGenerator(seed=7)
    first = task.next_batch(8, gen)
    assert gen.offset == 4
    second = task.next_batch(8, gen)
    for row_in, row_out in zip(first.inputs.cpu().numpy(), first.targets.cpu().numpy()):  # windows of the file
        starts = np.flatnonzero(train[: len(train) - t] == row_in[0])
        assert any(np.array_equal(train[s:s + t], row_in) and train[s + t] == row_out[-1] for s in starts)
    assert first.inputs.dtype == torch.int64 and first.inputs.device.type == DEVICE.type
    assert not torch.equal(first.inputs, second.inputs)
    again = task.next_batch(8, CudaLikeGenerator(seed=7))  # the state restored: the same batch
    assert torch.equal(again.inputs, first.inputs) and torch.equal(again.targets, first.targets)
    assert not torch.equal(task.next_batch(8, CudaLikeGenerator(seed=8)).inputs, first.inputs)


def test_sampled_labels_are_drawn_without_reading_the_device() -> None:
    """C3: Sophia's labels over many loss chunks: no multinomial (two host reads per chunk on CUDA), no read."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    h, w = torch.randn(300, 16, device=DEVICE, generator=g), torch.randn(50, 16, device=DEVICE, generator=g)
    with host_reads() as mode:
        mode.step = 1
        ids = sample_targets(h, w, g, rows=7)  # 43 chunks
        mode.step = None
    assert not mode.reads and ids.shape == (300,) and ids.dtype == torch.int64


def test_gumbel_max_samples_the_softmax() -> None:
    """C3: the Gumbel-max draw's frequencies match softmax(logits) on a skewed distribution (4 sigma bounds)."""
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0, -3.0]]).expand(40_000, 5).contiguous()
    draws = gumbel_max(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).double() / len(draws)
    p = torch.softmax(logits[0].double(), -1)
    assert torch.all((freq - p).abs() <= 4 * (p * (1 - p) / len(draws)).sqrt())


def test_head_logits_reach_the_loss_unrounded_under_autocast() -> None:
    """E1: under a bf16 autocast the head's logits are the float32 products of the bf16-rounded inputs, not those
    rounded again to bf16 (F.linear(h, W).float() would lose ~3 significant digits of each logit); chunked or not;
    the gradients are autocast's."""
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(64, 32, generator=g) * 4).requires_grad_()
    w = torch.randn(40, 32, generator=g).requires_grad_()
    y = torch.randint(0, 40, (64,), generator=g)
    exact = F.cross_entropy(h.detach().bfloat16().float() @ w.detach().bfloat16().float().T, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = F.cross_entropy(F.linear(h, w).float(), y)
        plain = head_cross_entropy(h, w, y)
        chunked = head_cross_entropy(h, w, y, rows=10)
        logits = head_logits(*head_inputs(h, w))
    assert logits.dtype == torch.float32
    assert abs(float(rounded.detach()) - float(exact)) > 1e-4  # the test can tell the two apart
    torch.testing.assert_close(plain, exact, rtol=1e-6, atol=0)
    torch.testing.assert_close(chunked, exact, rtol=1e-5, atol=0)
    # autocast's backward: the logits' gradient rounded to bf16, then bf16 matmuls (here from the exact logits)
    probs = torch.softmax(h.detach().bfloat16().float() @ w.detach().bfloat16().float().T, -1)
    g16 = ((probs - F.one_hot(y, 40)) / len(y)).bfloat16()  # (64, 40)
    want = (g16 @ w.detach().bfloat16()).float(), (g16.T @ h.detach().bfloat16()).float()
    for got, ref in zip(torch.autograd.grad(plain, (h, w)), want):
        torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-5)


def test_the_decoders_logits_are_the_ones_its_loss_sees_under_autocast() -> None:
    """E1: ``GPT(tokens)`` gives float32 logits under a bf16 autocast, and its loss is their cross-entropy."""
    from optbench_workloads._gpt import GPTConfig, build_gpt

    model = build_gpt(GPTConfig(vocab_size=40, seq_len=8, n_layer=1, n_head=2, d_model=16),
                      torch.Generator().manual_seed(0))
    x = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(x), model(x, x)
    assert logits.dtype == torch.float32 and logits.shape == (2, 8, 40)
    torch.testing.assert_close(F.cross_entropy(logits.flatten(0, 1), x.reshape(-1)), loss, rtol=1e-6, atol=0)
