"""FLOPs on every result: the model's per training example, the optimizer's per step, and MFU.

Counted once per trial, untimed, at trial start, on copies: the trial itself is untouched (same random streams,
same parameters, same eval rows: ``tests/test_flops.py`` pins it).

* **Model FLOPs per example**: the task's own ``flops_per_example()`` when it has one (analytic: the LMs use PaLM's
  model-FLOPs formula, linreg its exact count), else counted with ``torch.utils.flop_counter.FlopCounterMode`` on
  one forward+backward of a deep copy of the model over a batch of at most :data:`COUNT_BATCH` examples drawn from a
  generator of its own (CNNs, the teacher, third-party workloads). The counter sees matmuls, convolutions and
  attention only, the usual convention of model FLOPs (norms, activations and the softmax are left out).
* **Optimizer FLOPs per step**: one ``updater.step()`` on a deep copy of (model, updater) with unit gradients,
  counted by :class:`OpCounter`: matmul-like ops as FlopCounterMode counts them, plus every pointwise op (an
  optimizer is mostly pointwise: AdamW is 11 per parameter, see :data:`POINTWISE_WEIGHTS`), plus ``eigh`` (9 n^3)
  and ``qr`` (2 m n^2 - 2/3 n^3) from Golub & Van Loan's operation counts. Reductions and copies count 0.
  Without a refresh frequency the figure is the first step's (AdamW's or Muon's first step costs what every step
  does: creating zeroed state counts 0), one plugin call, so that a submission sees one extra step at most. Periodic
  work (SOAP's eigenbasis refresh, Shampoo's roots, every ``precondition_frequency`` = k steps) is amortised by
  counting one whole period after the first, steps k + 1 to 2 k (Shampoo preconditions only from step k on, its
  ``start_preconditioning_step``; a later start shifts the period), and
  taking their mean: (one refresh step + k - 1 ordinary steps) / k. Counted once per step, not per rank
  (data-parallel ranks repeat it).
* **MFU** (PaLM, Chowdhery et al. 2022, appendix B): model FLOPs per timed second over the device's dense bf16
  peak (:data:`PEAK_TFLOPS`, matched on the device name; per rank), None off such a GPU.

A count that fails (a submission whose step needs something the copy lacks) leaves the fields None, with a warning;
the trial goes on. The copies isolate everything an object holds; a plugin with process-wide side effects (a
class-level call counter, a global list) does see the counted calls: one ``step()`` (2 k with a refresh frequency)
before the trial's first.
"""

from __future__ import annotations

import copy
import math
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

COUNT_BATCH = 32  # examples in the batch the model is counted on (FLOPs per example do not depend on it)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16 TFLOP/s, from the vendors' data sheets
_PATCHING = threading.Lock()
FREQUENCY_KEYS = ("precondition_frequency",)  # hyperparameters naming a periodic refresh, in steps

# FLOPs per output element of a pointwise op: fused multiply-adds count 2 (addcmul, addcdiv: a product, then a
# scaled add; lerp: a + w (b - a) as one multiply-add after the difference), data movement 0, everything else 1.
POINTWISE_WEIGHTS = {"addcmul": 2, "addcdiv": 2, "lerp": 3, "copy": 0, "clone": 0, "fill": 0, "zero": 0,
                     "zeros_like": 0, "ones_like": 0, "empty_like": 0, "to": 0, "_to_copy": 0, "detach": 0,
                     "masked_fill": 0, "where": 0}


def _numel(out: Any) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel()
    if isinstance(out, (list, tuple)):
        return sum(_numel(o) for o in out)
    return 0


def _base(name: str) -> str:
    """``aten._foreach_addcmul_.Scalar`` -> ``addcmul``."""
    op = name.split("::")[-1].split(".")[0]
    return op.removeprefix("_foreach_").rstrip("_")


def _linalg(op: str, args: tuple[Any, ...]) -> int:
    """Golub & Van Loan's counts: symmetric eigendecomposition with vectors ~9 n^3, Householder QR 2 m n^2 - 2/3 n^3
    (per matrix of a batch)."""
    a = args[0]
    *lead, m, n = a.shape
    batch = math.prod(lead) if lead else 1
    if op in ("linalg_eigh", "_linalg_eigh"):
        return batch * 9 * n**3
    k = min(m, n)
    return batch * int(2 * max(m, n) * k**2 - 2 * k**3 / 3)


class OpCounter(TorchDispatchMode):
    """Counts FLOPs of every op run inside it: matmul-like ops by FlopCounterMode's formulas, pointwise ops by
    output size (:data:`POINTWISE_WEIGHTS`), eigh and QR by their textbook counts. :attr:`total` is the sum."""

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        out = func(*args, **kwargs)
        self.total += self.cost(func, args, kwargs, out)
        return out

    def cost(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
        packet = func._overloadpacket
        if packet in self.registry:
            return int(self.registry[packet](*args, **kwargs, out_val=out))
        name = packet.__name__
        if name in ("linalg_eigh", "_linalg_eigh", "linalg_qr"):
            return _linalg(name, args)
        pointwise = torch.Tag.pointwise in func.tags or name.startswith("_foreach_")
        if not pointwise:
            return 0
        return POINTWISE_WEIGHTS.get(_base(name), 1) * _numel(out if out is not None else args[0])


def _eagerly() -> Any:
    """Compiled functions run eagerly inside: a dispatch mode cannot see into compiled code, and torch.compile
    meeting one skips the frame, which a ``fullgraph=True`` function (heavyball's optimizers) then refuses for the
    rest of the process ("found no compiled frames"). Eager, the ops are counted and nothing is marked skipped."""
    return torch.compiler.set_stance("force_eager")


def counted(fn: Callable[[], Any], *, devices: list[torch.device]) -> int:
    """FLOPs of ``fn()`` under :class:`OpCounter`, with every random generator left as it was."""
    cuda = [d.index if d.index is not None else torch.cuda.current_device() for d in devices if d.type == "cuda"]
    with _eagerly(), torch.random.fork_rng(devices=cuda), OpCounter() as counter:
        fn()
    return counter.total


def model_counted(fn: Callable[[], Any], *, devices: list[torch.device]) -> int:
    """FLOPs of ``fn()`` as FlopCounterMode counts them (matmuls, convolutions, attention), generators untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    cuda = [d.index if d.index is not None else torch.cuda.current_device() for d in devices if d.type == "cuda"]
    with _eagerly(), torch.random.fork_rng(devices=cuda), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def model_flops_per_example(task: Any, model: nn.Module, *, device: torch.device) -> float:
    """The task's analytic ``flops_per_example()`` if it has one, else one counted forward+backward on a copy."""
    analytic = getattr(task, "flops_per_example", None)
    if callable(analytic):
        value = analytic()
        if value is not None:
            return float(value)
    twin = copy.deepcopy(model)
    batch = task.next_batch(COUNT_BATCH, _generator(device))
    examples = task.counts(batch)[0]
    flops = model_counted(lambda: task.loss(twin, batch).backward(), devices=[device])
    return flops / max(examples, 1)


def _generator(device: torch.device) -> torch.Generator:
    """A generator of the counts' own (the trial's data stream is not drawn from)."""
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(0)


def _whole_copy(self: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of an optimizer with every attribute (``Optimizer.__getstate__`` keeps only defaults, state
    and param_groups, which loses a submission's own attributes, e.g. SOAP's buckets)."""
    twin = object.__new__(type(self))
    memo[id(self)] = twin
    twin.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return twin


def twins(model: nn.Module, updater: Any) -> tuple[nn.Module, Any]:
    """Deep copies of (model, updater) together (the copy's state is keyed by the copy's parameters), optimizers
    inside wrappers included with all their attributes."""
    optimizer = torch.optim.Optimizer
    with _PATCHING:  # trials in threads of one process: one patch at a time
        had = "__deepcopy__" in optimizer.__dict__
        if not had:
            optimizer.__deepcopy__ = _whole_copy  # type: ignore[attr-defined]
        try:
            return copy.deepcopy((model, updater))
        finally:
            if not had:
                del optimizer.__deepcopy__  # type: ignore[attr-defined]


def optimizer_flops_per_step(model: nn.Module, updater: Any, *, hparams: Mapping[str, Any],
                             device: torch.device, closure: Callable[[nn.Module], Any] | None = None,
                             graph_grads: Callable[[nn.Module], None] | None = None) -> float:
    """FLOPs of one optimizer step on a copy of (model, updater), amortised over a periodic refresh (module doc).

    Args:
      model, updater: the trial's, copied together (the copies share parameters as the originals do).
      hparams: the submission's hyperparameters (its refresh frequency, if any).
      device: the trial's device.
      closure: for closure-taking submissions, ``closure(model_copy)`` returns the ``step`` argument.
      graph_grads: for submissions that differentiate the gradient (Hessian-vector products),
        ``graph_grads(model_copy)`` sets gradients that carry their graph; made off the count, so only the step's
        own work (its extra backward passes included) is counted.
    """
    twin_model, twin = twins(model, updater)
    params = [p for p in twin_model.parameters() if p.requires_grad]
    arg = closure(twin_model) if closure is not None else None

    def set_grads() -> None:
        if graph_grads is not None:
            graph_grads(twin_model)
            return
        for p in params:
            p.grad = torch.full_like(p, 1e-3)

    def one_step() -> None:
        twin.step(arg) if arg is not None else twin.step()

    def counted_step() -> int:
        set_grads()
        return counted(one_step, devices=[device])

    k = next((int(hparams[key]) for key in FREQUENCY_KEYS if key in hparams), None)
    if k is None or k <= 1:
        return float(counted_step())
    start = int(hparams.get("start_preconditioning_step") or 0)
    for _ in range(max(k, start)):  # SOAP's initialisation, Shampoo's grafted steps before its first roots
        set_grads()
        one_step()
    return sum(counted_step() for _ in range(k)) / k  # one whole period: one refresh


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU named ``device_name`` (e.g. "NVIDIA H100 80GB HBM3"), None if unknown."""
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name.upper():
            return tflops * 1e12
    return None


@dataclass(frozen=True)
class FlopCounts:
    """What was counted at trial start (None where a count failed)."""

    model_per_example: float | None
    optimizer_per_step: float | None

    def total(self, examples: int | None, steps: int | None) -> float | None:
        """Model FLOPs x examples + optimizer FLOPs x steps; None when either count or either total is missing."""
        if None in (self.model_per_example, self.optimizer_per_step, examples, steps):
            return None
        return self.model_per_example * examples + self.optimizer_per_step * steps  # type: ignore[operator]


def count_trial(task: Any, model: nn.Module, updater: Any, *, hparams: Mapping[str, Any], device: torch.device,
                closure: Callable[[nn.Module], Any] | None = None,
                graph_grads: Callable[[nn.Module], None] | None = None,
                deadline_passed: Callable[[], bool] = lambda: False, optimizer: bool = True) -> FlopCounts:
    """Both counts, each None (with a warning) if plugin code fails in it; a failure once ``deadline_passed()``
    (the trial's wall-clock limit interrupted the count, perhaps re-raised as another error) is re-raised, so
    that the trial ends as ``timeout``. Ctrl-C and the deadline itself are never caught. ``optimizer=False``:
    the model's count only (a submission that owns its whole step has no optimizer step to count apart)."""
    try:
        per_example: float | None = model_flops_per_example(task, model, device=device)
    except Exception as exc:  # a third-party task the counter cannot run: no FLOPs on its records
        if deadline_passed():
            raise
        warnings.warn(f"model FLOPs not counted: {type(exc).__name__}: {exc}", stacklevel=2)
        per_example = None
    if not optimizer:
        return FlopCounts(per_example, None)
    try:
        per_step: float | None = optimizer_flops_per_step(model, updater, hparams=hparams, device=device,
                                                           closure=closure, graph_grads=graph_grads)
    except Exception as exc:
        if deadline_passed():
            raise
        warnings.warn(f"optimizer FLOPs not counted: {type(exc).__name__}: {exc}", stacklevel=2)
        per_step = None
    return FlopCounts(per_example, per_step)


def mfu(model_per_example: float | None, examples: int, seconds: float, *, device_name: str,
        world_size: int = 1) -> float | None:
    """Model FLOPs utilisation: model FLOPs per timed second over the peak of ``world_size`` such devices."""
    peak = peak_flops(device_name)
    if peak is None or model_per_example is None or not seconds > 0:
        return None
    return model_per_example * examples / seconds / (peak * world_size)


class OptimizerTimer:
    """The optimizer step's seconds, measured with no added host synchronisation (``optimizer_share``).

    On CUDA a pair of timing events is recorded around each ``updater.step()`` (recording waits for nothing) and the
    pairs are read only by :meth:`collect`, called where the clock has just synchronised (a stretch's end), so
    every event has completed. Elsewhere plain ``perf_counter`` timers (CPU work is done when the call returns;
    on MPS, which queues work, the share is not measured). The events are reused from a pool: a step allocates
    nothing after the first stretch.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.usable = self.cuda or device.type == "cpu"
        self.seconds = 0.0
        self.pairs: list[tuple[Any, Any]] = []  # recorded this stretch (CUDA)
        self.pool: list[tuple[Any, Any]] = []
        self.opened: float | Any = None

    def start(self) -> None:
        if self.cuda:
            pair = self.pool.pop() if self.pool else (torch.cuda.Event(enable_timing=True),
                                                      torch.cuda.Event(enable_timing=True))
            pair[0].record()
            self.pairs.append(pair)
        elif self.usable:
            import time

            self.opened = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.pairs[-1][1].record()
        elif self.usable:
            import time

            self.seconds += time.perf_counter() - self.opened

    def collect(self) -> None:
        """Fold the stretch's CUDA events into :attr:`seconds`; call only after the device was synchronised."""
        for begin, end in self.pairs:
            self.seconds += begin.elapsed_time(end) / 1000.0
        self.pool.extend(self.pairs)
        self.pairs.clear()

    def reset(self) -> None:
        self.collect()
        self.seconds = 0.0

    def share(self, timed_seconds: float) -> float | None:
        """The optimizer's share of ``timed_seconds`` (None where not measured or nothing was timed)."""
        if not self.usable or not timed_seconds > 0:
            return None
        return min(self.seconds / timed_seconds, 1.0)
