"""Small optimizer classes that behave like the families plain classes come in, for the harness's tests.

* :class:`ModeSwitching`: the schedule-free family (schedulefree, pytorch_optimizer, heavyball): ``train()`` and
  ``eval()`` methods, ``eval()`` swaps the averaged weights into the parameters, and ``step()`` refuses to run
  outside train mode. It logs every ``eval()`` with the step it came at, so a test fails if evaluation happens
  without it.
* :class:`LineSearch`: the closure family (``torch.optim.LBFGS``, ``AdamWScheduleFreeClosure``): ``step(closure)``
  with no default, raising without one, calling it several times per step.
* :class:`DiagonalNewton`: the Hessian family (Adahessian, SophiaH): Hutchinson's estimate of the Hessian's
  diagonal from the gradients' own graph, so it needs ``backward(create_graph=True)`` and raises without it.
  :class:`QuietNewton` is the same class with nothing in its own source that says so (it must be declared).

The logs are class attributes (a trial run through the CLI gives the test no handle on the instance); tests reset
them with :func:`reset_logs`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def reset_logs() -> None:
    """Empty every family class's log (call at the start of a test)."""
    ModeSwitching.log.clear()
    LineSearch.calls.clear()
    DiagonalNewton.steps.clear()


class ModeSwitching(torch.optim.Optimizer):
    """Schedule-free SGD (Defazio et al., 2024) in miniature.

    State per parameter: ``z`` (the SGD sequence) and ``x`` (its running average, the weights to evaluate). In
    train mode the parameters hold ``y = (1 - beta) z + beta x``, where gradients are taken; in eval mode they hold
    ``x``. Starts in eval mode, as schedulefree's classes do, so a harness that never calls ``train()`` fails.
    """

    log: list[tuple[str, int]] = []  # ("eval" | "train", steps taken so far), one entry per call

    def __init__(self, params, lr: float = 0.02, beta: float = 0.9):
        super().__init__(params, {"lr": lr, "beta": beta, "train_mode": False, "k": 0})

    # The mode and the step count live in the parameter groups, as schedulefree keeps them: state_dict() saves them.
    @property
    def train_mode(self) -> bool:
        return self.param_groups[0]["train_mode"]

    @property
    def taken(self) -> int:
        return self.param_groups[0]["k"]

    def _set(self, key: str, value) -> None:
        for g in self.param_groups:
            g[key] = value

    def _params(self):
        return [(g, p) for g in self.param_groups for p in g["params"]]

    def _state(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st["z"], st["x"] = p.detach().clone(), p.detach().clone()
        return st

    @torch.no_grad()
    def eval(self) -> None:
        ModeSwitching.log.append(("eval", self.taken))
        if self.train_mode:
            for _, p in self._params():
                p.copy_(self._state(p)["x"])
        self._set("train_mode", False)

    @torch.no_grad()
    def train(self) -> None:
        ModeSwitching.log.append(("train", self.taken))
        if not self.train_mode:
            for g, p in self._params():
                st = self._state(p)
                p.copy_((1 - g["beta"]) * st["z"] + g["beta"] * st["x"])
        self._set("train_mode", True)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        if not self.train_mode:
            raise RuntimeError("ModeSwitching is not in train mode: call optimizer.train() before step()")
        self._set("k", self.taken + 1)
        c = 1.0 / self.taken
        for g, p in self._params():
            if p.grad is None:
                continue
            st = self._state(p)
            st["z"].add_(p.grad, alpha=-g["lr"])
            st["x"].lerp_(st["z"], c)
            p.copy_((1 - g["beta"]) * st["z"] + g["beta"] * st["x"])
        return None


class LineSearch(torch.optim.Optimizer):
    """Gradient descent with a backtracking line search: the loss at trial points comes from the closure, so the
    closure is required (``step(closure)`` has no default, as in ``torch.optim.LBFGS``)."""

    calls: list[int] = []  # closure calls per step

    def __init__(self, params, lr: float = 0.1, shrink: float = 0.5, tries: int = 4):
        super().__init__(params, {"lr": lr, "shrink": shrink, "tries": tries})

    def step(self, closure: Callable[[], torch.Tensor]):
        if closure is None:
            raise RuntimeError("LineSearch needs a closure: step(closure)")
        with torch.enable_grad():
            loss0 = float(closure())
        n = 1
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        start = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        g0 = self.param_groups[0]
        lr = g0["lr"]
        for _ in range(g0["tries"]):
            with torch.no_grad():
                for p, s, d in zip(params, start, grads):
                    p.copy_(s - lr * d)
            with torch.enable_grad():
                loss = float(closure())
            n += 1
            if loss < loss0:
                break
            lr *= g0["shrink"]
        else:  # no trial point was better: stay where the step began
            with torch.no_grad():
                for p, s in zip(params, start):
                    p.copy_(s)
        LineSearch.calls.append(n)
        return loss0


class DiagonalNewton(torch.optim.Optimizer):
    """A diagonal Newton-like step with Hutchinson's estimate ``v * (H v)`` of the Hessian's diagonal, averaged as
    Adahessian does (an EMA of its square, square-rooted). ``H v`` is ``torch.autograd.grad`` of the gradients, so
    they must carry their graph: the harness must call ``backward(create_graph=True)``; without it this raises,
    as Adahessian does."""

    steps: list[int] = []  # one entry per step taken with a differentiable gradient

    def __init__(self, params, lr: float = 0.05, beta: float = 0.99, eps: float = 1e-4, seed: int = 0):
        super().__init__(params, {"lr": lr, "beta": beta, "eps": eps})
        self.gen = torch.Generator().manual_seed(seed)
        self.taken = 0

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if any(p.grad.grad_fn is None for p in params):
            raise RuntimeError("the gradient has no grad_fn: call loss.backward(create_graph=True)")
        vs = [(torch.randint(0, 2, p.shape, generator=self.gen) * 2 - 1).to(p) for p in params]
        hvs = torch.autograd.grad([p.grad for p in params], params, grad_outputs=vs)
        g0 = self.param_groups[0]
        self.taken += 1
        correction = 1 - g0["beta"] ** self.taken
        with torch.no_grad():
            for p, v, hv in zip(params, vs, hvs):
                h = self.state[p].setdefault("h", torch.zeros_like(p))
                h.mul_(g0["beta"]).addcmul_(v * hv, v * hv, value=1 - g0["beta"])
                p.sub_(g0["lr"] * p.grad / ((h / correction).sqrt() + g0["eps"]))
        DiagonalNewton.steps.append(len(params))
        return None


class QuietNewton(DiagonalNewton):
    """:class:`DiagonalNewton` under another name, whose own source says nothing of graphs: the harness cannot
    detect the need, so the user declares it (``--create-graph``)."""
