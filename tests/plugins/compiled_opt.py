"""A plain optimizer whose update is a ``torch.compile(fullgraph=True)`` function, as heavyball's are (eager backend:
no compiler needed). Counting its FLOPs under a dispatch mode must not poison the compiled function."""

import torch

@torch.compile(fullgraph=True, backend="eager")
def _update(p, g, lr: float):
    p.add_(g, alpha=-lr)


class CompiledSGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _update(p, p.grad, group["lr"])
