"""How much device memory a trial needs, and the largest micro-batch that fits: pure arithmetic, no torch.

A workload describes its model at one size as a :class:`MemoryProfile` (every parameter's shape and role, the
activation bytes one training example keeps for the backward pass, a fixed transient such as a loss chunk); the
engine asks :func:`plan_micro_batch` for the micro-batch, with the device's capacity passed in (the engine reads it
from CUDA; a test passes a fake one). Nothing here crashes a trial mid-way to learn what fits: a plan that cannot fit
even one example is refused before any training (:class:`DoesNotFit`).

The model of memory (bytes, fp32 weights as optbench trains them, bf16 only inside autocast):

* weights 4 P, gradients 4 P (P: parameters);
* optimizer state: :func:`state_floats` per submission (AdamW's two moments 2 P; Muon's momentum on hidden matrices
  plus AdamW's moments on the rest; SOAP's and Shampoo's two Kronecker factors and two eigenbases / inverse roots per
  matrix side of at most ``MAX_PRECOND_DIM``, plus their Adam or grafting moments); an unknown submission is charged
  ``DEFAULT_STATE_COPIES`` copies of the parameters (conservative: AdEMAMix, the largest known, keeps 3);
* the start-of-trial FLOPs count (:mod:`optbench.engine.flops`) steps a deep copy of (model, optimizer) with unit
  gradients once: for that moment weights, gradients and state exist twice (no activations then);
* activations: ``activation_bytes`` per example times the micro-batch, plus ``transient_bytes``.

Usable memory = capacity x (1 - ``MARGIN``) - ``RESERVE_BYTES``: the margin covers allocator fragmentation and the
estimate's error, the reserve the CUDA context, cuBLAS workspaces and the train data held on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1 << 30
MARGIN = 0.15  # of the capacity, kept free: fragmentation of the caching allocator, error of the activation model
RESERVE_BYTES = 2 * GIB  # CUDA context, cuBLAS/cuDNN workspaces, the resident train tokens (at most ~4 GB: see lm)
FLOAT_BYTES = 4  # weights, gradients and optimizer state are fp32
MAX_PRECOND_DIM = 2048  # SOAP's and Shampoo's largest preconditioned side (optbench's defaults; hparam max_precond_dim)
DEFAULT_STATE_COPIES = 4  # floats per parameter for a submission not listed in STATE_COPIES (conservative)

# Floats of optimizer state per parameter, by submission name, for the element-wise part. Matrix preconditioners
# (soap, shampoo) add their factors in :func:`state_floats`; muon keeps 1 on hidden matrices and 2 (AdamW) on the
# rest.
STATE_COPIES = {
    "sgd": 1, "lion": 1, "adafactor": 1,  # momentum (Adafactor's factored second moment is O(m + n): counted as 1)
    "adamw": 2, "nadamw": 2, "adam": 2, "adalayer": 2, "sophia": 2, "dadapt": 2, "prodigy": 3, "dog": 2,
    "schedulefree": 2, "ademamix": 3, "soap": 2, "shampoo": 3, "muon": 2,
}
MATRIX_ROLES = ("matrix",)  # roles a matrix optimizer preconditions (embeddings and heads go to AdamW in muon)


class DoesNotFit(ValueError):
    """Not even a micro-batch of one example fits; the message says what is needed and what is usable."""


@dataclass(frozen=True)
class Param:
    """One parameter tensor: its shape and role (``matrix``, ``vector``, ``embed``, ``pos``, ``head``)."""

    shape: tuple[int, ...]
    role: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, kw_only=True)
class MemoryProfile:
    """What a workload's model at one size holds.

    Attributes:
      params: every parameter tensor (a tied one once).
      activation_bytes: bytes kept for the backward pass per training example (one sequence).
      transient_bytes: a fixed working set beside them (a chunk of the loss's logits and its gradient).
    """

    params: tuple[Param, ...]
    activation_bytes: int
    transient_bytes: int = 0

    @property
    def n_params(self) -> int:
        return sum(p.size for p in self.params)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The chosen micro-batch and the bytes it was chosen with."""

    micro_batch_size: int
    usable_bytes: int
    fixed_bytes: int  # weights + gradients + optimizer state
    peak_bytes: int  # the larger of training's peak at the chosen micro-batch and the FLOPs count's copy


def _factors(p: Param, max_dim: int) -> int:
    """Floats of a matrix preconditioner on every 2-D parameter (embeddings included, as optbench's SOAP and Shampoo
    precondition them): per side of at most ``max_dim``, a factor and a basis (or inverse root) of side^2 each."""
    if len(p.shape) != 2:
        return 0
    return sum(2 * d * d for d in p.shape if d <= max_dim)


def state_floats(profile: MemoryProfile, optimizer: str, *, max_precond_dim: int = MAX_PRECOND_DIM) -> int:
    """Floats of optimizer state for ``optimizer`` (a submission name) over the profile's parameters."""
    name = optimizer.split(":")[-1].split(".")[-1].lower()
    if name == "muon":
        return sum(p.size * (1 if p.role in MATRIX_ROLES and len(p.shape) == 2 else 2) for p in profile.params)
    copies = STATE_COPIES.get(name, DEFAULT_STATE_COPIES)
    extra = sum(_factors(p, max_precond_dim) for p in profile.params) if name in ("soap", "shampoo") else 0
    return copies * profile.n_params + extra


def fixed_bytes(profile: MemoryProfile, optimizer: str, *, max_precond_dim: int = MAX_PRECOND_DIM) -> int:
    """Weights, gradients and optimizer state in bytes."""
    return FLOAT_BYTES * (2 * profile.n_params + state_floats(profile, optimizer, max_precond_dim=max_precond_dim))


def usable_bytes(capacity: int) -> int:
    """The bytes a trial may plan for on a device of ``capacity`` bytes (module docstring)."""
    return int(capacity * (1.0 - MARGIN)) - RESERVE_BYTES


def peak_bytes(profile: MemoryProfile, optimizer: str, micro: int, *, max_precond_dim: int = MAX_PRECOND_DIM) -> int:
    """The trial's peak at micro-batch ``micro``: training, or the FLOPs count's copy if that is larger."""
    fixed = fixed_bytes(profile, optimizer, max_precond_dim=max_precond_dim)
    training = fixed + micro * profile.activation_bytes + profile.transient_bytes
    return max(training, 2 * fixed)


def plan_micro_batch(profile: MemoryProfile, *, optimizer: str, share: int, capacity: int,
                     max_precond_dim: int = MAX_PRECOND_DIM) -> Plan:
    """The largest micro-batch of at most ``share`` examples (one process's part of the batch) whose
    :func:`peak_bytes` fits :func:`usable_bytes` of ``capacity``, evened out so that the accumulated passes are
    equal (the same number of passes, each as small as that allows).

    Raises:
      DoesNotFit: not even one example fits.
    """
    usable = usable_bytes(capacity)
    fixed = fixed_bytes(profile, optimizer, max_precond_dim=max_precond_dim)
    room = usable - fixed - profile.transient_bytes
    most = min(share, room // max(1, profile.activation_bytes)) if room > 0 else 0
    if most < 1 or 2 * fixed > usable:
        need = peak_bytes(profile, optimizer, 1, max_precond_dim=max_precond_dim)
        raise DoesNotFit(f"{optimizer} needs {need / GIB:.1f} GiB for one example (weights, gradients, state "
                         f"{fixed / GIB:.1f} GiB), more than the {usable / GIB:.1f} GiB usable of "
                         f"{capacity / GIB:.0f} GiB")
    passes = math.ceil(share / most)
    micro = math.ceil(share / passes)
    return Plan(micro_batch_size=micro, usable_bytes=usable, fixed_bytes=fixed,
                peak_bytes=peak_bytes(profile, optimizer, micro, max_precond_dim=max_precond_dim))


def largest_fitting(profile: MemoryProfile, optimizer: str, capacity: int, *, limit: int = 1 << 20) -> int:
    """The largest micro-batch (at most ``limit``) that fits ``capacity``, before any evening out; 0 if none: the
    tables' column."""
    try:
        plan_micro_batch(profile, optimizer=optimizer, share=1, capacity=capacity)
    except DoesNotFit:
        return 0
    room = usable_bytes(capacity) - fixed_bytes(profile, optimizer) - profile.transient_bytes
    return int(min(limit, room // max(1, profile.activation_bytes)))


def total_params(params: Sequence[Param], *, roles: Sequence[str] | None = None) -> int:
    """The parameters of ``params`` (only those of ``roles`` if given)."""
    return sum(p.size for p in params if roles is None or p.role in roles)
