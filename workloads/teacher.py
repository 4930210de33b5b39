"""A small workload for curvature studies: full-batch regression of a random teacher network by a tanh MLP.

The edge-of-stability experiments of Cohen et al. ("Gradient Descent on Neural Networks Typically Occurs at the
Edge of Stability", ICLR 2021) train small tanh networks on a fixed data subset with full-batch gradient descent and
the squared loss: the top Hessian eigenvalue first rises (progressive sharpening) until it reaches 2/lr, then hovers
there while the loss keeps falling, non-monotonically. This workload is that setting at CPU scale: ``n`` fixed
inputs x ~ N(0, I_d), targets from a fixed random two-layer tanh teacher (normalised to unit variance), a student
MLP of width ``width``, loss 0.5 * mean((f(x) - y)^2). ``next_batch`` returns the whole data set when the batch size
is at least ``n`` (gradient descent; the default), else a random subset (SGD). The metric is the full-data loss.

Use it as ``-w teacher``; with ``--diagnostics`` (or ``optbench curvature``) every evaluation also records the
sharpness (:mod:`optbench.engine.diagnostics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from optbench.api import Budget, EvalPeriod, Goal, Metric, Role, Size

SIZES = {
    "tiny": Size(
        name="tiny", target=0.01, batch_size=256, step_hint=2000,
        budget=Budget(max_steps=4000, max_seconds=120.0), eval_every=EvalPeriod(steps=100),
        options={"n": 256, "d": 16, "width": 64, "teacher_width": 32},
        note="n=256, d=16, tanh MLP width 64, full batch; loss 0.01 (from about 0.5)",
    ),
}


@dataclass(frozen=True, kw_only=True)
class TeacherBatch:
    x: torch.Tensor  # (B, d)
    y: torch.Tensor  # (B,)


class TeacherTask:
    """The fixed data set on one device (drawn from seed 0: the problem is the same for every trial)."""

    def __init__(self, size: Size, device: torch.device) -> None:
        o = size.options
        self.n, self.d, self.width = int(o["n"]), int(o["d"]), int(o["width"])
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.n, self.d, generator=g)
        w1 = torch.randn(self.d, int(o["teacher_width"]), generator=g) / math.sqrt(self.d)
        w2 = torch.randn(int(o["teacher_width"]), generator=g)
        y = torch.tanh(2.0 * x @ w1) @ w2
        y = (y - y.mean()) / y.std()
        self.device = device
        self.x, self.y = x.to(device), y.to(device)

    def init_model(self, generator: torch.Generator) -> nn.Module:
        model = nn.Sequential(nn.Linear(self.d, self.width), nn.Tanh(), nn.Linear(self.width, 1))
        with torch.no_grad():
            for layer in (model[0], model[2]):  # PyTorch's default bounds, drawn from the trial's generator
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        return model.to(self.device)

    def param_roles(self, model: nn.Module) -> dict[str, Role]:
        """The first layer's matrix is hidden (the input is dense features, not tokens: no embedding), its bias a
        bias; the last layer (weight and bias) is the head."""
        del model
        return {"0.weight": Role.HIDDEN, "0.bias": Role.NORM_BIAS, "2.weight": Role.HEAD, "2.bias": Role.HEAD}

    def next_batch(self, batch_size: int, generator: torch.Generator) -> TeacherBatch:
        if batch_size >= self.n:
            return TeacherBatch(x=self.x, y=self.y)
        idx = torch.randint(0, self.n, (batch_size,), generator=generator, device=generator.device).to(self.device)
        return TeacherBatch(x=self.x[idx], y=self.y[idx])

    def loss(self, model: nn.Module, batch: TeacherBatch) -> torch.Tensor:
        return 0.5 * (model(batch.x).squeeze(-1) - batch.y).pow(2).mean()

    def sampled_loss(self, model: nn.Module, batch: TeacherBatch, generator: torch.Generator) -> torch.Tensor:
        pred = model(batch.x).squeeze(-1)
        # Drawn where the generator lives (the trial's device: a device-less randn would be a CPU draw, which a
        # CUDA generator refuses), then moved to the predictions (a no-op when they share it).
        noise = torch.randn(pred.shape, generator=generator, device=generator.device).to(pred.device)
        return 0.5 * (pred - (pred.detach() + noise)).pow(2).mean()

    def evaluate(self, model: nn.Module) -> Mapping[str, float]:
        return {"loss": float(self.loss(model, TeacherBatch(x=self.x, y=self.y)).detach())}

    def counts(self, batch: TeacherBatch) -> tuple[int, int]:
        n = int(batch.x.shape[0])
        return n, n


class Teacher:
    """The ``teacher`` workload."""

    name = "teacher"
    metric = Metric(name="loss", goal=Goal.MIN)
    sizes: Mapping[str, Size] = SIZES
    default_size = "tiny"
    description = "full-batch regression of a random tanh teacher by a tanh MLP (edge-of-stability studies)"

    def setup(self, size: Size, *, device: torch.device, data_dir: Path | None = None) -> TeacherTask:
        return TeacherTask(size, device)


teacher = Teacher()
