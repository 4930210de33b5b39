"""How torch runs a trial: deterministic algorithms, the precision of fp32 matmuls, and compilation.

These are process-wide torch settings. :class:`TrialSettings` applies a trial's for the trial's duration and puts
the previous ones back afterwards, so that the next trial of the same process starts from the same state:

- ``deterministic``: ``torch.use_deterministic_algorithms(True)`` (an operation without a deterministic kernel
  raises, so the trial ends as ``error`` naming it, instead of silently differing), cuDNN's deterministic
  algorithms without benchmarking, cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, set in the environment
  if unset, and left there: it only fixes the workspace size), and attention through the math SDPA kernel (the
  fused flash and memory-efficient kernels accumulate in a nondeterministic order in backward).
- ``tf32``: on CUDA, fp32 matmuls and convolutions on TensorFloat-32 tensor cores (AlgoPerf's setting on its A100
  hardware) or in full fp32. CPU matmuls are left alone: they are always full fp32.

Compilation (``--compile``): :func:`compile_model` compiles the model with its batch dimension marked dynamic, so
one graph serves every batch size (a batch-size schedule, a short last micro-batch), and :class:`CompileWatch`
counts the trial's compilations, recompilations and compile seconds through Dynamo's compile callbacks.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS's documented setting for reproducible results (about 24 MiB per stream)


class TrialSettings:
    """Context manager: torch's process-wide settings for one trial, restored on exit.

    Args:
      device: the trial's device (TF32 applies to CUDA only).
      deterministic: deterministic algorithms, cuBLAS workspace, math attention.
      tf32: fp32 matmuls and convolutions on TF32 tensor cores (CUDA only).
    """

    def __init__(self, *, device: torch.device, deterministic: bool, tf32: bool) -> None:
        self.device, self.deterministic, self.tf32 = device, deterministic, tf32
        self.saved: dict[str, Any] = {}
        self.attention: Any = None

    def __enter__(self) -> TrialSettings:
        self.saved = {"algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
                      "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)}
        if self.device.type == "cuda":
            self.saved["precision"] = _fp32_precision()
            _set_fp32_precision(tf32=self.tf32)
        if self.deterministic:
            self._deterministic()
        return self

    def _deterministic(self) -> None:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self.attention = sdpa_kernel([SDPBackend.MATH])
        self.attention.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.attention is not None:
            self.attention.__exit__(None, None, None)
            self.attention = None
        enabled, warn_only = self.saved["algorithms"]
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.saved["cudnn"]
        if "precision" in self.saved:
            _restore_fp32_precision(self.saved["precision"])


def _fp32_precision() -> tuple[bool, bool]:
    """Whether fp32 matmuls and cuDNN convolutions may use TF32. Read and written through the ``allow_tf32`` flags:
    on torch 2.9 and later they set the newer ``fp32_precision`` settings consistently (setting only some of those
    instead leaves a mix that the ``allow_tf32`` getters, which Inductor reads, refuse with an error)."""
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_fp32_precision(*, tf32: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def _restore_fp32_precision(saved: tuple[bool, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def matmul_precision(device: str, tf32: bool) -> str:
    """What a trial's fp32 matmuls ran in, as recorded: ``tf32`` on CUDA with TF32 on, else ``fp32``."""
    return "tf32" if tf32 and torch.device(device).type == "cuda" else "fp32"


# ------------------------------------------------------------------------------------------------ compilation
class DynamicBatch(nn.Module):
    """The compiled model, called with dimension 0 of every tensor argument marked dynamic (``maybe_mark_dynamic``:
    a hint, never an error if the model specialises it), so that the first compilation already takes any batch
    size and a new one does not recompile. Attributes the workload reads (``model.features``) come from the
    compiled module (and through it from the plain one)."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                torch._dynamo.maybe_mark_dynamic(value, 0)
        return self.compiled(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["compiled"], name)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` with a dynamic batch dimension, after clearing Dynamo's in-memory caches: each
    trial of a process compiles afresh, as the first one did (Inductor's on-disk caches still serve graphs any
    earlier process compiled; :class:`CompileWatch` records what each trial paid)."""
    torch._dynamo.reset()
    return DynamicBatch(torch.compile(model))


class CompileWatch:
    """Context manager: counts the compilations Dynamo starts while it is open, the recompilations among them (a
    frame compiled again after its first graph stopped matching: a new shape, a specialised value), and the
    seconds spent compiling, into ``into()``: an object with ``compiles``, ``recompiles`` and ``compile_seconds``
    (the trial's counters), looked up when each compilation ends, so that a state restored meanwhile (a
    checkpoint loaded, warm-up steps undone) receives them.

    Uses ``torch._dynamo.callback_handler``; on a torch without it nothing is counted (:func:`compiles_counted`).
    """

    def __init__(self, into: Any) -> None:
        self.into = into
        self.started: float | None = None

    def __enter__(self) -> CompileWatch:
        handler = _handler()
        if handler is not None:
            handler.register_start_callback(self._start)
            handler.register_end_callback(self._end)
        return self

    def __exit__(self, *exc: object) -> None:
        handler = _handler()
        if handler is None:
            return
        for remove, callback in ((handler.remove_start_callback, self._start),
                                 (handler.remove_end_callback, self._end)):
            try:
                remove(callback)
            except ValueError:
                pass

    def _start(self, *args: Any) -> None:
        self.started = time.perf_counter()

    def _end(self, *args: Any) -> None:
        if self.started is None:
            return
        counters = self.into()
        counters.compile_seconds += time.perf_counter() - self.started
        self.started = None
        if _trigger(args) != "DYNAMO":  # a backward compiled lazily, at its first use: seconds only
            return
        counters.compiles += 1
        counters.recompiles += int(_frame_compile(args) > 0)


def _handler() -> Any:
    callback = getattr(torch._dynamo, "callback_handler", None)
    return callback if hasattr(callback, "register_start_callback") else None


def compiles_counted() -> bool:
    """Whether this torch lets :class:`CompileWatch` count compilations (else the record says None, not 0)."""
    return _handler() is not None


def _trigger(args: tuple[Any, ...]) -> str:
    """The callback's trigger name (``DYNAMO`` for a frame compiled by Dynamo; older torch passes no arguments)."""
    trigger = getattr(args[0], "callback_trigger", None) if args else None
    return getattr(trigger, "name", "DYNAMO")


def _frame_compile(args: tuple[Any, ...]) -> int:
    """The compile's index among the compilations of its frame, from its compile id ``[!N/]frame/compile[_attempt]``
    (0 for the first compilation; 0 when the id cannot be read)."""
    compile_id = str(getattr(args[0], "compile_id", "")) if args else ""
    parts = compile_id.strip("[]").split("/")
    try:
        return int(parts[-1].split("_")[0]) if len(parts) >= 2 else 0
    except ValueError:
        return 0
