"""Matrix helpers shared by the matrix-preconditioned submissions (SOAP, Shampoo, Muon): the 2-D view of a
parameter, stacked gradients and state for batched linear algebra, decompositions batched by matrix size, the
update itself, and the AdamW step for the parameters those methods route away (scalars, vectors, embeddings)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from optbench_submissions._common import state_dtype


def matrix_shape(p: torch.Tensor) -> tuple[int, int] | None:
    """``(shape[0], prod(shape[1:]))`` for a parameter with two or more dimensions, None for scalars and vectors.

    Args:
      p: a parameter; a conv kernel (out, in, kh, kw) becomes (out, in * kh * kw).
    Returns:
      The 2-D shape the matrix methods work on, or None.
    """
    if p.dim() < 2:
        return None
    return int(p.shape[0]), int(p.numel() // p.shape[0])


def stack_grads(params: list[torch.Tensor], shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """The gradients of ``params`` as one (B, m, n) tensor in ``dtype`` (a view, no copy, when B = 1 and possible).

    Args:
      params: parameters with gradients, each reshapable to ``shape``.
      shape: (m, n).
      dtype: dtype of the result (the state dtype).
    Returns:
      (B, m, n) tensor; callers must not modify it in place (it may alias ``p.grad``).
    """
    if len(params) == 1:
        return params[0].grad.reshape(1, *shape).to(dtype)
    return torch.stack([p.grad.reshape(shape) for p in params]).to(dtype)


def batched_by_size(fn: Callable[[torch.Tensor], torch.Tensor], mats: list[torch.Tensor]) -> list[torch.Tensor]:
    """``fn`` of each (B_i, d, d) stack in ``mats``, with one call of ``fn`` per distinct (d, dtype, device).

    The stacks of one size are concatenated along the batch, decomposed together and split back. Why: the factors of
    a model come in few sizes but many shape buckets (a GPT block's d x d factors sit in every one of its matrices'
    buckets), and ``torch.linalg.eigh`` checks its solver's status with one host read per call on CUDA; batched by
    size, a refresh reads once per size instead of once per bucket and side.

    Args:
      fn: maps a (B, d, d) batch to a (B, ...) result, each matrix independently (eigh, an inverse root, qr).
      mats: (B_i, d_i, d_i) stacks.
    Returns:
      ``fn``'s result for each stack, in the order of ``mats`` (views into one result per size).
    """
    sizes: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(mats):
        sizes.setdefault((m.shape[-1], m.dtype, m.device), []).append(i)
    out: list[torch.Tensor] = [mats[0]] * len(mats)  # every slot is filled below
    for idx in sizes.values():
        parts = [mats[i] for i in idx]
        whole = fn(parts[0] if len(parts) == 1 else torch.cat(parts))  # (sum B_i, ...)
        for i, part in zip(idx, whole.split([m.shape[0] for m in parts])):
            out[i] = part
    return out


def apply_update(params: list[torch.Tensor], updates: list[torch.Tensor], *, alpha: float, decay: float) -> None:
    """theta <- theta * decay + alpha * update for every pair, in the update's precision.

    Args:
      params: parameters (any dtype); half-precision ones are updated in float32 and rounded once.
      updates: tensors with as many elements as their parameter (reshaped to it here).
      alpha: step multiplier (usually -lr times a bias correction).
      decay: multiplicative decoupled weight decay, 1 - lr * wd.
    """
    same = [(p, u.view(p.shape) if u.is_contiguous() else u.reshape(p.shape)) for p, u in zip(params, updates)]
    full = [(p, u) for p, u in same if p.dtype == u.dtype]
    if full:
        ps, us = [p for p, _ in full], [u for _, u in full]
        if decay != 1.0:
            torch._foreach_mul_(ps, decay)
        torch._foreach_add_(ps, us, alpha=alpha)
    for p, u in same:
        if p.dtype != u.dtype:
            work = p.to(u.dtype)
            if decay != 1.0:
                work.mul_(decay)
            p.copy_(work.add_(u, alpha=alpha))


def adamw_step(params: list[torch.Tensor], states: list[dict[str, Any]], *, lr: float, betas: tuple[float, float],
               eps: float, weight_decay: float) -> None:
    """One AdamW step (Loshchilov & Hutter 2019) for parameters routed away from a matrix method.

    State per parameter: ``step`` (int), ``exp_avg`` and ``exp_avg_sq`` (parameter-shaped, :func:`state_dtype`).

    Args:
      params: parameters with gradients.
      states: their state dicts (filled on first use).
      lr, betas, eps, weight_decay: AdamW's hyperparameters (decoupled decay, bias-corrected moments).
    """
    by_step: dict[int, list[int]] = {}
    for i, (p, st) in enumerate(zip(params, states)):
        if not st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.contiguous_format)
            st["exp_avg_sq"] = torch.zeros_like(st["exp_avg"])
        st["step"] += 1
        by_step.setdefault(st["step"], []).append(i)
    beta1, beta2 = betas
    for t, idx in by_step.items():  # one group in practice; several only if some parameters started later
        ps = [params[i] for i in idx]
        grads = [params[i].grad.to(states[i]["exp_avg"].dtype) for i in idx]
        m = [states[i]["exp_avg"] for i in idx]
        v = [states[i]["exp_avg_sq"] for i in idx]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
        torch._foreach_add_(denom, eps)
        upd = torch._foreach_div(m, denom)
        apply_update(ps, upd, alpha=-lr / (1 - beta1**t), decay=1 - lr * weight_decay)


class StackedState:
    """Stacks of per-parameter state, one (B, ...) tensor per key for a bucket of equally shaped matrices.

    After :meth:`get`, ``state[p][key]`` of the i-th parameter *is* ``stack[key][i]`` (a view), so batched linear
    algebra updates every parameter's state in place with no copies, while ``state_dict()`` sees ordinary
    per-parameter tensors (torch.save stores the shared storage once). When the views are gone (after
    ``load_state_dict``, or when the set of parameters with gradients changes), the stack is rebuilt from the
    per-parameter tensors, which is always correct, only slower, once.
    """

    def __init__(self) -> None:
        self._stacks: dict[Any, tuple[tuple[int, ...], dict[str, torch.Tensor]]] = {}

    def clear(self) -> None:
        """Forget every stack (after load_state_dict the state tensors are new objects)."""
        self._stacks.clear()

    def get(self, tag: Any, params: list[torch.Tensor], states: list[dict[str, Any]],
            keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The stacked tensors of ``keys`` for ``params`` (in order), built or reused.

        Args:
          tag: identifies the bucket (e.g. group index and shape).
          params: the bucket's parameters, in a fixed order.
          states: their state dicts, each holding every key.
          keys: state entries to stack.
        Returns:
          key -> (B, ...) tensor whose i-th slice is ``states[i][key]``.
        """
        keys = tuple(keys)
        ids = tuple(id(p) for p in params)
        cached = self._stacks.get(tag)
        if cached is not None and cached[0] == ids and set(cached[1]) == set(keys) and all(
            states[i][k].data_ptr() == cached[1][k][i].data_ptr() for k in keys for i in range(len(params))
        ):
            return cached[1]
        stacks = {k: torch.stack([st[k] for st in states]) for k in keys}
        for i, st in enumerate(states):
            for k in keys:
                st[k] = stacks[k][i]
        members = set(ids)
        for old in [t for t, (old_ids, _) in self._stacks.items() if members.intersection(old_ids)]:
            del self._stacks[old]  # its parameters' state now lives in the new stack: free the old one
        self._stacks[tag] = (ids, stacks)
        return stacks
