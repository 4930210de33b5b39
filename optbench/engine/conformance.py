"""The conformance suite every submission must pass: built-ins in tests/test_conformance.py, third-party plugins
through ``optbench check-plugin SPEC``. One table of checks, each a small function returning what it saw.

The checks use a tiny model holding every kind of parameter a submission meets in practice (an embedding, a 4-D
conv kernel, 2-D matrices, 1-D biases and norm weights) and a separable quadratic loss over all of them, so the
minimum is known exactly: loss(theta) = sum_p 0.5 * mean(h_p * (p - p*)^2) with fixed curvatures h_p in [0.5, 2].
"""

from __future__ import annotations

import functools
import io
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optbench.api import Capability, Submission, TrialInfo
from optbench.engine.runner import deadline
from optbench.plugins.registry import Loaded

QUADRATIC_STEPS = 500
# A plain optimizer class runs at its constructor's defaults unless told otherwise, and torch's defaults are not
# tuned for anything: the checks that train (quadratic, linreg_tiny) then try these learning rates and pass at the
# first that works, saying which. Submissions with their own tuned defaults are checked at those defaults only.
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


DEFAULT_TIME_LIMIT = 300.0  # seconds per check (check-plugin --check-timeout): a compiled optimizer's checks take
# tens of seconds each on a CPU (heavyball's SOAP: 240 s for the suite); linreg_tiny may train up to one trial per lr
KINDS = ("checked", "raised", "timed out")  # CheckResult.kind: how a check ended


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """What one check saw. ``kind``: ``checked`` (passed or failed its criterion), ``raised`` (the submission
    raised an exception: ``detail`` names its type and message), ``timed out`` (past the check's time limit)."""

    name: str
    passed: bool
    detail: str
    kind: str = "checked"


class Raised(Exception):
    """The submission raised inside a check (at one lr of the grid, or inside the linreg trial): the message says
    which exception, with its type, and where."""


class CheckTimedOut(BaseException):
    """Raised into a check past its time limit. A BaseException, so that plugin code catching ``Exception``
    cannot swallow it."""


@functools.cache
def warm_imports() -> None:
    """Take one step of a torch optimizer, with no time limit: torch imports parts of itself on an optimizer's first
    step (``torch._dynamo``, sympy), and a check's time limit firing inside such an import would leave the module
    half-imported for every later check (``module 'sympy' has no attribute 'printing'``)."""
    model = _new_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    Quadratic(model).loss().backward()
    opt.step()


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class ZooModel(nn.Module):
    """Every parameter kind: embedding (16, 8), conv (4, 2, 3, 3) + bias, hidden matrix (8, 8), norm, head (4, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.conv = nn.Conv2d(2, 4, 3)
        self.hidden = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # only used for the routing by module type
        return self.head(self.norm(self.hidden(self.embed(tokens))))


class Quadratic:
    """The separable quadratic over a model's parameters, with optimum and curvatures drawn from a fixed seed."""

    def __init__(self, model: nn.Module, *, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = model
        self.targets = [0.5 * torch.randn(p.shape, generator=g) for p in model.parameters()]
        self.curv = [0.5 + 1.5 * torch.rand(p.shape, generator=g) for p in model.parameters()]

    def loss(self) -> torch.Tensor:
        total = torch.zeros(())
        for p, t, h in zip(self.model.parameters(), self.targets, self.curv):
            total = total + 0.5 * (h * (p.float() - t) ** 2).mean()
        return total

    def sampled_loss(self, generator: torch.Generator) -> torch.Tensor:
        """Gaussian "likelihood" around the current parameters: labels drawn from the model itself."""
        total = torch.zeros(())
        for p, h in zip(self.model.parameters(), self.curv):
            y = p.detach().float() + torch.randn(p.shape, generator=generator) / h.sqrt()
            total = total + 0.5 * (h * (p.float() - y) ** 2).mean()
        return total


def _info(steps: int) -> TrialInfo:
    return TrialInfo(workload="conformance", size="quadratic", step_hint=steps, max_steps=steps, batch_size=1,
                     device="cpu", seed=0)


def _new_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return ZooModel().to(dtype)


def _train(sub: Submission, model: nn.Module, steps: int, *, updater: Any = None, gen_seed: int = 0,
           hparams: dict[str, Any] | None = None) -> Any:
    """``steps`` updates on the quadratic; returns the updater (so it can be saved or continued)."""
    quad = Quadratic(model)
    hp = dict(sub.defaults) if hparams is None else hparams
    updater = updater if updater is not None else sub.create(model, hp, _info(QUADRATIC_STEPS))
    wants_closure = {Capability.CLOSURE, Capability.SAMPLED_LOSS} & set(sub.capabilities)
    graph = Capability.CREATE_GRAPH in set(sub.capabilities)  # Hessian-vector products differentiate the gradient
    gen = torch.Generator().manual_seed(gen_seed)

    def closure(sampled: bool = False) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = quad.sampled_loss(gen) if sampled else quad.loss()
            loss.backward(create_graph=graph)
        return loss.detach()

    for _ in range(steps):
        loss = quad.loss()
        loss.backward(create_graph=graph)
        updater.step(closure) if wants_closure else updater.step()
        updater.zero_grad(set_to_none=True)
    return updater


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


def check_api(sub: Submission) -> CheckResult:
    """Defaults are JSON (they go into every result) and the search space parses."""
    from optbench.plugins.hparams import parse_search_space

    json.dumps(dict(sub.defaults))
    space = sub.search_space()
    if space is not None:
        parse_search_space(space, source=sub.name)
    return CheckResult(name="api", passed=True,
                       detail=f"{len(sub.defaults)} hyperparameters; search space {'ok' if space else 'none'}")


def check_quadratic(sub: Submission, hparams: dict[str, Any] | None = None) -> CheckResult:
    """The loss falls below 20% of its start in 500 steps, and stays finite (a plain optimizer class: at some lr of
    ``LR_GRID`` unless an lr is given)."""
    def attempt(hp: dict[str, Any]) -> tuple[bool, str]:
        model = _new_model()
        with torch.no_grad():
            start = float(Quadratic(model).loss())
        _train(sub, model, QUADRATIC_STEPS, hparams=hp)
        with torch.no_grad():
            end = float(Quadratic(model).loss())
        return math.isfinite(end) and end < 0.2 * start, f"loss {start:.4g} -> {end:.4g} in {QUADRATIC_STEPS} steps"

    return _over_grid("quadratic", sub, hparams, attempt)


def _over_grid(name: str, sub: Submission, hparams: dict[str, Any] | None,
               attempt: Callable[[dict[str, Any]], tuple[bool, str]]) -> CheckResult:
    """Run ``attempt`` at the submission's hyperparameters, or for a plain optimizer class with no lr given, at each
    lr of ``LR_GRID`` until one passes."""
    from optbench.plugins.registry import is_plain_optimizer

    hp = dict(sub.defaults) if hparams is None else dict(hparams)
    given_lr = hparams is not None and hparams.get("lr") != sub.defaults.get("lr")
    if not (is_plain_optimizer(sub) and "lr" in hp and not given_lr):
        ok, detail = attempt(hp)
        return CheckResult(name=name, passed=ok, detail=detail)
    tried = []
    for lr in LR_GRID:
        try:
            ok, detail = attempt({**hp, "lr": lr})
        except Raised as exc:  # an exception is no matter of lr: the grid stops at the first
            raise Raised(f"{exc} at lr={lr:g}") from None
        except Exception as exc:
            raise Raised(f"{describe(exc)} at lr={lr:g}") from None
        if ok:
            return CheckResult(name=name, passed=True, detail=f"{detail} at lr={lr:g} (plain class: lr grid)")
        tried.append(f"{lr:g}")
    return CheckResult(name=name, passed=False, detail=f"{detail}; no lr of {', '.join(tried)} passed")


def check_coverage(sub: Submission) -> CheckResult:
    """Every parameter (1-D, 2-D, 4-D conv, embedding) is in exactly one group and moves."""
    model = _new_model()
    before = [p.detach().clone() for p in model.parameters()]
    updater = _train(sub, model, 3)
    ids = [id(p) for g in getattr(updater, "param_groups", []) for p in g["params"]]
    names = dict((id(p), n) for n, p in model.named_parameters())
    dupes = sorted({names.get(i, "?") for i in ids if ids.count(i) > 1})
    missing = sorted(n for n, p in model.named_parameters() if id(p) not in ids) if ids else []
    frozen = [n for (n, p), b in zip(model.named_parameters(), before) if torch.equal(p.detach(), b)]
    problems = ([f"in several groups: {dupes}"] if dupes else []) + ([f"in no group: {missing}"] if missing else []) \
        + ([f"never updated: {frozen}"] if frozen else [])
    return CheckResult(name="coverage", passed=not problems, detail="; ".join(problems) or "all 8 parameters updated")


def check_determinism(sub: Submission) -> CheckResult:
    """Two runs from the same start give bit-identical parameters on CPU."""
    a, b = _new_model(), _new_model()
    _train(sub, a, 20)
    _train(sub, b, 20)
    same = torch.equal(_flat(a), _flat(b))
    return CheckResult(name="determinism", passed=same, detail="identical" if same else "runs differ")


def _resume_matches(sub: Submission, dtype: torch.dtype) -> bool:
    ref = _new_model(dtype)
    up = _train(sub, ref, 12)
    buf = io.BytesIO()
    torch.save({"model": ref.state_dict(), "updater": up.state_dict()}, buf)
    _train(sub, ref, 8, updater=up, gen_seed=1)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    copy = _new_model(dtype)
    copy.load_state_dict(saved["model"])
    fresh = sub.create(copy, dict(sub.defaults), _info(QUADRATIC_STEPS))
    fresh.load_state_dict(saved["updater"])
    _train(sub, copy, 8, updater=fresh, gen_seed=1)
    return torch.equal(_flat(ref), _flat(copy))


def check_state_dict(sub: Submission) -> CheckResult:
    """Saving mid-training (torch.save, then torch.load with weights_only=True) and resuming continues identically,
    for float32 and for bfloat16 parameters (whose optimizer state may be kept in float32 and must stay so)."""
    bad = [str(d).removeprefix("torch.") for d in (torch.float32, torch.bfloat16) if not _resume_matches(sub, d)]
    return CheckResult(name="state_dict", passed=not bad,
                       detail=f"continuation differs for {', '.join(bad)}" if bad else "identical continuation")


def check_bfloat16(sub: Submission) -> CheckResult:
    """bfloat16 parameters stay bfloat16, finite, and move."""
    model = _new_model(torch.bfloat16)
    before = _flat(model)
    _train(sub, model, 5)
    dtypes = {p.dtype for p in model.parameters()}
    after = _flat(model)
    ok = dtypes == {torch.bfloat16} and bool(torch.isfinite(after).all()) and not torch.equal(before, after)
    return CheckResult(name="bfloat16", passed=ok, detail=f"dtypes {sorted(map(str, dtypes))}")


def check_linreg(loaded: Loaded[Submission], hparams: dict[str, Any] | None = None, *,
                 time_left: float | None = None) -> CheckResult:
    """It reaches the linreg ``tiny`` target within the budget (a plain class: at some lr of the grid), within
    ``time_left`` seconds in all (:class:`CheckTimedOut` past them)."""
    from optbench.plugins.registry import load_workload
    from optbench.engine.prepared import MAX_SECONDS
    from optbench.engine.runner import TrialConfig, run_trial

    from optbench.store.failures import reason_line

    ends = None if time_left is None else time.perf_counter() + time_left

    def attempt(hp: dict[str, Any]) -> tuple[bool, str]:
        # The trial's own deadline is the check's limit (the runner's timer would replace the check's own).
        timeout = None if ends is None else ends - time.perf_counter()
        if timeout is not None and timeout <= 0:
            raise CheckTimedOut()
        # Steps decide, not seconds: the tier's 60-s budget let a loaded machine turn a reach into a miss (Shampoo's
        # trial missed at 0.105 under a test suite's load); the check's own time limit bounds the wall time.
        config = TrialConfig(seed=0, device="cpu", hparams=hp, timeout=timeout, max_seconds=MAX_SECONDS)
        with tempfile.TemporaryDirectory() as tmp:
            r = run_trial(load_workload("linreg"), loaded, config, results_dir=Path(tmp))
        rec = r.record
        if rec.outcome == "timeout" and timeout is not None:
            raise CheckTimedOut()
        if rec.outcome in ("error", "oom"):
            raise Raised(f"{reason_line(rec.error) or rec.outcome} (in the linreg trial, outcome {rec.outcome})")
        detail = (f"reached in {rec.steps_to_target} steps" if rec.outcome == "reached"
                  else f"{rec.outcome}; best {rec.best_metric} vs target {rec.target}")
        return rec.outcome == "reached", detail

    return _over_grid("linreg_tiny", loaded.obj, hparams, attempt)


CHECKS: dict[str, Callable[[Submission], CheckResult]] = {
    "api": check_api, "coverage": check_coverage, "determinism": check_determinism,
    "state_dict": check_state_dict, "bfloat16": check_bfloat16, "quadratic": check_quadratic,
}


TRAINING_CHECKS = ("quadratic",)  # checks that take the hyperparameters (linreg_tiny too)


def run_check(loaded: Loaded[Submission], name: str, *, hparams: dict[str, Any] | None = None,
              limit: float | None = None) -> CheckResult:
    """Run one check; an exception is a failure of kind ``raised`` naming it, never a crash, and a check past
    ``limit`` seconds is stopped and ``timed out``.

    Args:
      hparams: values over the submission's defaults (``check-plugin -o``), merged and checked by the caller
        (:func:`optbench.plugins.hparams.merge`); they apply to the checks that train.
      limit: seconds the check may take (None: no limit). Enforced by SIGALRM in the main thread only
        (:func:`optbench.engine.runner.deadline`); the linreg_tiny check hands it to its trials as their
        ``timeout`` instead (the runner's own deadline, which would replace the check's).
    """
    if limit is not None:
        warm_imports()
    start = time.perf_counter()
    try:
        if name == "linreg_tiny":
            return check_linreg(loaded, hparams, time_left=limit)
        with deadline(limit, error=CheckTimedOut):
            if name in TRAINING_CHECKS:
                return CHECKS[name](loaded.obj, hparams)  # type: ignore[call-arg]
            return CHECKS[name](loaded.obj)
    except CheckTimedOut:
        return CheckResult(name=name, passed=False, detail=f"stopped after its time limit of {limit:g} s",
                           kind="timed out")
    except Raised as exc:
        return CheckResult(name=name, passed=False, detail=str(exc), kind="raised")
    except Exception as exc:  # the plugin is under test: report, don't raise
        if limit is not None and time.perf_counter() - start >= limit:  # the limit's exception, re-raised wrapped
            return CheckResult(name=name, passed=False, detail=f"stopped after its time limit of {limit:g} s",
                               kind="timed out")
        return CheckResult(name=name, passed=False, detail=describe(exc), kind="raised")


ALL_CHECKS = (*CHECKS, "linreg_tiny")
