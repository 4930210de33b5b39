"""Every tensor a step makes is on the trial's device: each workload with each capability path of a submission
(plain step, closure, sampled-label closure, evaluation swap), its steps and evaluations run under a mode that fails
on a factory call whose tensor would not land on the trial's device on a GPU.

Mechanism, and why this one: a :class:`torch.overrides.TorchFunctionMode` sees every factory call (``randn``,
``zeros``, ``arange``, ``multinomial``, ``Tensor.new_*``, ``normal_``...) with its arguments. A call that names no
device lands on the process default device, which is the CPU on a GPU machine too; on CPU that is also the trial's
device, so comparing devices would see nothing (``torch.randn(shape, generator=cuda_generator)`` raises only on
CUDA: the teacher workload's sampled loss did exactly that). So the mode fails a call that names no device (nor takes
it from a tensor argument) wherever it would break on a GPU: when it draws from a generator (the trial's generators
live on its device) or makes a tensor of one or more dimensions (mixing it with device tensors raises). A 0-d tensor
made without a device is a host scalar, which PyTorch mixes with device tensors freely (optimizers keep their step
counts so): allowed. Poisoning the default device (``torch.set_default_device("meta")``) would catch the same
calls but breaks those host scalars too (adamw's step count ends in ``.item()`` on a meta tensor). Where a device is
named or inherited, it must be the trial's, and a generator's device must be the tensor's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from optbench.api import Capability, SubmissionSpec
from optbench.engine.loop import TrialLoop
from optbench.engine.runner import TrialConfig, run_trial
from optbench.plugins.registry import Loaded, Origin, load_submission, load_workload
from tests.workloads.test_cifar10 import write_cifar
from tests.workloads.test_lm import markov_corpus, write_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster

# Factories whose device is the ``device=`` argument, else the default device.
MADE = {torch.randn, torch.rand, torch.randint, torch.randperm, torch.zeros, torch.ones, torch.empty, torch.full,
        torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.empty_strided}
# Factories and in-place draws whose device is their first tensor argument's unless ``device=`` is given.
DERIVED = {torch.multinomial, torch.bernoulli, torch.poisson, torch.normal, torch.rand_like, torch.randn_like,
           torch.randint_like, torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
           torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty, torch.Tensor.new_full,
           torch.Tensor.new_tensor, torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_,
           torch.Tensor.bernoulli_, torch.Tensor.exponential_, torch.Tensor.geometric_, torch.Tensor.log_normal_,
           torch.Tensor.cauchy_}


class ForeignDevice(AssertionError):
    """A step made a tensor that would not be on the trial's device on a GPU."""


def _caller() -> str:
    """file:line of the innermost frame outside torch and the mode (the call that made the tensor)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/torch/" not in name and frame.f_code.co_name not in ("_caller", "problem", "__torch_function__"):
            return f"{Path(name).name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


class TrialDeviceMode(TorchFunctionMode):
    """Fails (and records) a factory call whose tensor would land off ``device`` on a GPU (module docstring)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.seen = device, []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in MADE or func in DERIVED:
            problem = self.problem(func, args, kwargs, out)
            if problem is not None:
                self.seen.append(problem)
                raise ForeignDevice(problem)
        return out

    def problem(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                out: Any) -> str | None:
        name, gen = getattr(func, "__name__", str(func)), kwargs.get("generator")
        named = kwargs.get("device")
        source = _first_tensor(args) if func in DERIVED else None
        if named is None and source is None:  # the default device: the CPU, on a GPU machine too
            if gen is not None or (isinstance(out, torch.Tensor) and out.dim() > 0):
                return (f"{name} at {_caller()} names no device: on a {self.device.type} trial it lands on the "
                        f"default device{' while drawing from a generator' if gen is not None else ''}")
            return None
        where = torch.device(named) if named is not None else source.device  # type: ignore[union-attr]
        if gen is not None and gen.device.type != where.type:
            return f"{name} at {_caller()} draws on {where} from a {gen.device} generator"
        if where.type != self.device.type and isinstance(out, torch.Tensor) and (out.dim() > 0 or gen is not None):
            return f"{name} at {_caller()} makes a tensor on {where} in a step of a trial on {self.device}"
        return None


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> list[TrialDeviceMode]:
    """Steps and evaluations (the evaluation swap included) of every trial run under a :class:`TrialDeviceMode`;
    set-up is not (models are built on the CPU and moved on purpose)."""
    modes: list[TrialDeviceMode] = []

    def under_mode(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(loop: TrialLoop) -> Any:
            mode = TrialDeviceMode(torch.device(loop.prep.device))
            modes.append(mode)
            with mode:
                return method(loop)

        return wrapped

    monkeypatch.setattr(TrialLoop, "step", under_mode(TrialLoop.step))
    monkeypatch.setattr(TrialLoop, "evaluate", under_mode(TrialLoop.evaluate))
    return modes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    corpus = markov_corpus(12_000)
    write_tokens(root, "wikitext103", train=corpus[:10_000], val=corpus[10_000:])
    return write_cifar(root, n_train=64, n_val=32)


class _ClosureSGD(torch.optim.SGD):
    """Plain SGD that asks for the closure every step (the CLOSURE path without sampled labels)."""

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        assert closure is not None
        with torch.enable_grad():
            closure()
        return super().step()


CLOSURE_SGD = Loaded(name="closure_sgd", origin=Origin(source="module", distribution="tests", version="0"),
                     obj=SubmissionSpec(name="closure_sgd", defaults={"lr": 1e-3},
                                        factory=lambda model, hp, info: _ClosureSGD(model.parameters(), lr=hp["lr"]),
                                        capabilities=frozenset({Capability.CLOSURE})))
# (workload, size options) with batches small enough for a few CPU steps
WORKLOADS = {"linreg": {}, "teacher": {}, "wikitext": {"batch_size": 4}, "cifar10": {"batch_size": 4}}
# name -> the capability path it takes
SUBMISSIONS = {"adamw": "plain", "closure_sgd": "closure", "sophia": "sampled loss", "schedulefree": "eval swap",
               "adamw_avg": "eval swap (averaged)"}


def _submission(name: str) -> Loaded:
    if name == "closure_sgd":
        return CLOSURE_SGD
    return load_submission("optbench_submissions.averaged:adamw_avg" if name == "adamw_avg" else name)


@pytest.mark.parametrize("submission", list(SUBMISSIONS))
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_every_step_tensor_is_on_the_trial_device(workload: str, submission: str, data_dir: Path, tmp_path: Path,
                                                  guarded: list[TrialDeviceMode]) -> None:
    cfg = TrialConfig(device="cpu", max_steps=3, eval_every_steps=2, data_dir=data_dir, **WORKLOADS[workload])
    r = run_trial(load_workload(workload), _submission(submission), cfg, results_dir=tmp_path)
    seen = [p for mode in guarded for p in mode.seen]
    assert not seen, f"{workload} + {submission} ({SUBMISSIONS[submission]}): {seen[0]}"
    assert r.record.outcome in ("missed", "reached"), r.record.error
    assert len(guarded) >= 3 + 2  # 3 steps and 2 evaluations were watched


def test_the_mode_fails_a_draw_that_names_no_device() -> None:
    gen = torch.Generator().manual_seed(0)
    mode = TrialDeviceMode(torch.device("cpu"))
    with mode:
        torch.randn(3, generator=gen, device=gen.device)  # named: fine
        torch.zeros(())  # a host scalar: fine
        torch.multinomial(torch.ones(2, 4, device=gen.device), 1, generator=gen)  # the input's device: fine
        with pytest.raises(ForeignDevice, match="randn at test_step_devices.py:[0-9]+ names no device"):
            torch.randn(3, generator=gen)
        with pytest.raises(ForeignDevice, match="arange"):
            torch.arange(4)
    assert len(mode.seen) == 2
