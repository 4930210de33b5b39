"""Forward and backward passes of one update step: gradient accumulation over micro-batches and over ranks.

A global batch of B examples is cut into this rank's share (``optbench.parallel.distributed.part``) and the share into
micro-batches of at most m examples (``--micro-batch-size``). Each micro-batch's mean loss is weighted by its share
of the global batch's tokens, w_i = n_i / N, before ``backward()``, so the accumulated gradient is

    sum_i w_i grad(mean loss over micro-batch i) = grad(mean loss over the global batch)

(every token weighted equally, as one pass over the whole batch would), and summing it over ranks
(:meth:`optbench.parallel.distributed.Group.all_reduce_grads`) gives the same gradient on every rank. With one micro-batch
and one rank nothing is weighted or reduced: the step is exactly ``loss = task.loss(model, batch); loss.backward()``.

Nothing here reads a value back from the device: the step's loss stays a 0-d device tensor until the runner reads
a stretch of them at once. With several ranks, each micro-batch starts with :meth:`Group.check_peers` (one round trip
to the rendezvous store, host only, no device work): a rank whose peer failed stops at its next micro-batch instead
of queueing work behind a collective that will never complete (see :mod:`optbench.parallel.distributed`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optbench.api import Task, named_params
from optbench.engine.batches import batch_length, micro_ranges, slice_batch
from optbench.parallel.distributed import Group, World, part

# backward(create_graph=True) warns of a parameter <-> gradient reference cycle unless the gradients are set to None
# after use; the loop does exactly that after every step (zero_grad(set_to_none=True)), so the warning is noise.
warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True", category=UserWarning)


class Stepper:
    """Runs the forward/backward passes of a step for one rank.

    Args:
      task: the workload's task.
      model: the module forward passes go through (compiled or not).
      params_of: the plain module whose parameters the gradients belong to.
      micro: the micro-batch size (None: the rank's whole share in one pass).
      world: this process's rank among the trial's processes.
      group: the collectives (None on one process).
      sample_gen: the generator sampled-label losses draw from.
      create_graph: backward with ``create_graph=True``, for submissions with :attr:`Capability.CREATE_GRAPH`
        (their step differentiates the gradients: Hessian-vector products). The graph is freed when the loop sets
        the gradients to None after the step.
    """

    def __init__(self, *, task: Task, model: nn.Module, params_of: nn.Module, micro: int | None, world: World,
                 group: Group | None, sample_gen: torch.Generator, create_graph: bool = False) -> None:
        self.task, self.model, self.micro, self.world, self.group = task, model, micro, world, group
        self.sample_gen = sample_gen
        self.create_graph = create_graph
        self.params = [p for _, p in named_params(params_of)]
        self.passes = 0  # forward/backward passes so far (tests count them)

    def plan(self, batch: Any) -> list[tuple[Any, float | None]]:
        """This rank's micro-batches of ``batch`` with their loss weights (None: the whole batch, unweighted)."""
        if self.world.size == 1 and self.micro is None:
            return [(batch, None)]
        n = batch_length(batch)
        start, stop = part(n, self.world)
        ranges = micro_ranges(start, stop, self.micro)
        if self.world.size == 1 and len(ranges) == 1:
            return [(batch, None)]
        total = self.task.counts(batch)[1]  # tokens of the global batch
        out = []
        for a, b in ranges:
            mb = slice_batch(self.task, batch, a, b)
            out.append((mb, self.task.counts(mb)[1] / total))
        return out

    def backward(self, batch: Any, *, sampled: bool = False) -> torch.Tensor:
        """Forward and backward over this rank's micro-batches; afterwards every parameter's ``.grad`` holds the
        gradient of the global batch's mean loss (summed over ranks). Returns this rank's share of that loss
        (the global loss is the sum of the ranks' shares), a 0-d tensor still on the device."""
        total: torch.Tensor | None = None
        for mb, weight in self.plan(batch):
            if self.group is not None:
                self.group.check_peers()
            loss = self.task.sampled_loss(self.model, mb, self.sample_gen) if sampled else self.task.loss(self.model, mb)
            if weight is not None:
                loss = loss * weight
            loss.backward(create_graph=self.create_graph)
            self.passes += 1
            share = loss.detach()
            total = share if total is None else total + share
        if self.group is not None:
            self.group.all_reduce_grads(self.params)
        if total is None:  # a rank with no examples in this batch (fewer examples than ranks)
            total = torch.zeros((), device=self.params[0].device)
        return total

    def closure(self, batch: Any) -> Callable[..., torch.Tensor]:
        """The ``step(closure)`` argument: re-runs forward and backward over the same micro-batches (``sampled``:
        with labels sampled from the model, each micro-batch drawing in turn from the sample generator) and returns
        the global batch's loss."""

        def closure(sampled: bool = False) -> torch.Tensor:
            self.model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                share = self.backward(batch, sampled=sampled)
            if self.group is not None:
                share = self.group.reduce_values(share).to(device=share.device, dtype=share.dtype)
            return share

        return closure
