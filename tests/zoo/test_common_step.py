"""The opening every built-in ``step()`` shares (optbench_submissions._common): the closure is evaluated with
gradients on even inside ``@torch.no_grad()``, and only parameters with gradients are handed to the update."""

from __future__ import annotations

import torch

from optbench_submissions._common import groups_with_grads, run_closure
from optbench_submissions.adamw import AdamW


def test_run_closure_enables_gradients_and_passes_the_loss_through():
    w = torch.ones(3, requires_grad=True)

    def closure() -> torch.Tensor:
        loss = (w * 2).sum()
        loss.backward()
        return loss

    with torch.no_grad():  # as inside a step() decorated with @torch.no_grad()
        loss = run_closure(closure)
    assert loss.item() == 6.0 and w.grad.tolist() == [2.0, 2.0, 2.0]
    assert run_closure(None) is None


def test_groups_with_grads_skips_parameters_and_groups_without_one():
    a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
    a.grad, c.grad = torch.ones(2), torch.ones(2)
    groups = [{"params": [a, b]}, {"params": [b]}, {"params": [c]}]
    got = [(g is groups[0] or g is groups[2], [id(p) for p in ps]) for g, ps in groups_with_grads(groups)]
    assert got == [(True, [id(a)]), (True, [id(c)])]


def test_a_step_leaves_a_parameter_without_gradient_untouched():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = AdamW([used, unused], lr=0.1)
    used.grad = torch.ones(2)
    opt.step()
    assert unused.tolist() == [1.0, 1.0] and used.tolist() != [1.0, 1.0] and unused not in opt.state
