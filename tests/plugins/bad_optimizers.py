"""Submissions that misbehave on purpose, for the runner's failure-handling tests."""

import torch

from optbench.api import Capability, SubmissionSpec


class NaNOptimizer(torch.optim.SGD):
    """Plain SGD that writes NaN into every parameter at its third step."""

    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr=lr)
        self.calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.calls += 1
        super().step()
        if self.calls >= 3:
            for g in self.param_groups:
                for p in g["params"]:
                    p.fill_(float("nan"))


class CrashingOptimizer(torch.optim.SGD):
    """Raises inside step, as a buggy plugin would."""

    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr=lr)

    def step(self, closure=None):
        raise ValueError("boom from the plugin")


class OOMOptimizer(torch.optim.SGD):
    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr=lr)

    def step(self, closure=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")


class _Averaging(torch.optim.SGD):
    """SGD whose eval_params() swaps in zeros: lets a test see that evaluation uses the swapped parameters."""

    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr=lr)
        self.entered = 0
        self.exited = 0

    def eval_params(self):
        import contextlib

        @contextlib.contextmanager
        def swap():
            self.entered += 1
            saved = [p.detach().clone() for g in self.param_groups for p in g["params"]]
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        p.zero_()
            try:
                yield
            finally:
                with torch.no_grad():
                    flat = [p for g in self.param_groups for p in g["params"]]
                    for p, s in zip(flat, saved):
                        p.copy_(s)
                self.exited += 1

        return swap()


averaging = SubmissionSpec(
    name="averaging", factory=lambda model, hp, info: _Averaging(model.parameters(), lr=hp["lr"]),
    defaults={"lr": 0.01}, capabilities=frozenset({Capability.EVAL_PARAMS}),
)

not_a_submission = object()

broken_import = None  # see broken_plugin.py


class BrokenWorkload:
    """A workload whose setup fails the way buggy plugin code does (not a usage error)."""

    def __init__(self):
        from optbench_workloads.linreg import LinReg

        base = LinReg()
        self.name, self.metric, self.sizes = "broken", base.metric, base.sizes
        self.default_size, self.description = base.default_size, "fails in setup"

    def setup(self, size, *, device, data_dir=None):
        raise KeyError("bug in the workload plugin")
