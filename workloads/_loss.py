"""Cross-entropy of a language-model head without the logits of the whole batch in memory, with float32 logits.

The head turns hidden states h (N, d) into logits h W^T (N, V). With GPT-2's V = 50257, the fp32 logits of
8 x 1024 tokens and their gradient take 2 x 1.6 GB, more than the rest of a 124M model's activations. Here the rows
are taken in chunks of ``rows`` (about ``LOSS_CHUNK_ELEMENTS`` logits each); each chunk's loss is computed under
activation checkpointing, so only h, W and the targets are kept for the backward pass, which recomputes one
chunk's logits at a time. Value and gradient are the plain loss's (up to the order of the float sums): the
cross-entropy summed over chunks is the cross-entropy summed over rows.

Precision (:func:`head_logits`): the logits reach the loss in float32, never rounded to bfloat16 first. Under a
low-precision autocast the head's matmul takes bf16 inputs (tensor-core speed) and writes its float32 accumulator
as it is (``torch.mm(..., out_dtype=torch.float32)`` on CUDA); a plain ``F.linear(h, W).float()`` would round every
logit to bf16's 8 bits of mantissa and only then widen it (nanoGPT's head does). The backward pass is autocast's
(the logits' gradient in bf16 through bf16 matmuls), so only the forward values change.

Sampled labels (:func:`sample_targets`, Sophia's estimator) are drawn by the Gumbel-max trick,
argmax_v (logits_v + G_v) with G_v = -log E_v, E_v ~ Exp(1) independent: an exact sample of softmax(logits), made
of elementwise kernels and an argmax, with no host synchronisation (``torch.multinomial`` checks its input with two
host reads per call on CUDA, once per chunk).

References:
  Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", arXiv 2411.09009 (the memory problem).
  Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv 1604.06174 (recomputation in backward).
  Gumbel, "Statistical Theory of Extreme Values", 1954; Maddison, Tarlow & Minka, "A* Sampling", NeurIPS 2014
    (the Gumbel-max trick).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOSS_CHUNK_ELEMENTS = 1 << 25  # logits per chunk: 32M, 128 MB in fp32 (about 670 rows at V = 50257)
LOW_PRECISION = (torch.bfloat16, torch.float16)

# Device types whose matmul can write a float32 result from bf16/fp16 inputs (torch.mm's ``out_dtype``): filled
# by :func:`check_fp32_head` before training, read (never probed) inside the traced forward.
_FP32_OUT: dict[str, bool] = {}


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk for a head of ``vocab_size`` outputs."""
    return max(1, LOSS_CHUNK_ELEMENTS // vocab_size)


def _low_precision_autocast(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``device`` when autocast is on there and it is bf16/fp16, else None."""
    if not torch.is_autocast_enabled(device.type):
        return None
    dtype = torch.get_autocast_dtype(device.type)
    return dtype if dtype in LOW_PRECISION else None


def _mm_fp32_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (n, d) @ b (d, V) of low-precision inputs into a float32 result, accumulated in float32.

    CUDA: one matmul with ``out_dtype`` (the accumulator written as it is). Elsewhere (CPU, or a build without it,
    see :func:`check_fp32_head`): the inputs widened first, which gives the same value (products of bf16 numbers are
    exact in float32) at float32 matmul speed. Autocast is off inside: it would cast the widened inputs back.
    """
    with torch.autocast(device_type=a.device.type, enabled=False):
        if _FP32_OUT.get(a.device.type, False):
            return torch.mm(a, b, out_dtype=torch.float32)
        return torch.mm(a.float(), b.float())


class _LowPrecisionHead(torch.autograd.Function):
    """logits = h W^T in float32 from low-precision h (n, d) and W (V, d); gradients as autocast's F.linear."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd's ctx
        ctx.save_for_backward(h, weight)
        return _mm_fp32_out(h, weight.t())  # (n, V) float32

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        h, weight = ctx.saved_tensors
        g = grad.to(h.dtype)  # (n, V): autocast's F.linear gets its output gradient in the matmul's dtype too
        with torch.autocast(device_type=h.device.type, enabled=False):
            return g @ weight, g.t() @ h  # (n, d), (V, d) in h's dtype; autograd widens them to the inputs'


def head_inputs(h: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h (N, d) and weight (V, d) in the dtype the head's matmul takes: the autocast dtype under a bf16/fp16
    autocast (cast once here, not once per chunk: a (V, d) copy of the head each time), else as they are."""
    dtype = _low_precision_autocast(h.device)
    if dtype is None:
        return h, weight
    return h.to(dtype), weight.to(dtype)


def head_logits(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Logits h W^T as float32, never rounded below it: h (n, d), weight (V, d) -> (n, V) float32.

    Low-precision inputs (:func:`head_inputs` under autocast, or a bf16 model) go through a matmul that keeps its
    float32 accumulator; float32 inputs through ``F.linear`` (in float32 on the tiers without autocast).
    """
    if h.dtype in LOW_PRECISION and weight.dtype == h.dtype:
        return _LowPrecisionHead.apply(h, weight)
    return F.linear(h, weight).float()


def check_fp32_head(device: torch.device) -> bool:
    """Whether the head's matmul can write float32 from bf16 inputs on ``device`` (decided once, before training).

    Called at set-up, never inside a step or a compiled graph. Where it cannot (no CUDA kernel for ``out_dtype``
    in this build), the head widens its inputs to float32 instead: the same logits, slower; a warning says so.
    """
    kind = device.type
    if kind not in _FP32_OUT:
        ok = False
        if kind == "cuda":
            try:
                a = torch.ones(8, 8, dtype=torch.bfloat16, device=device)
                ok = torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
            except (RuntimeError, TypeError, NotImplementedError):
                ok = False
            if not ok:
                warnings.warn("torch.mm(out_dtype=float32) is not available for bf16 on this device: the LM head "
                              "runs its matmul in float32 (same logits, slower)", RuntimeWarning, stacklevel=2)
        _FP32_OUT[kind] = ok
    return _FP32_OUT[kind]


def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of one chunk: h (n, d), weight (V, d), targets (n,) -> 0-d float32."""
    return F.cross_entropy(head_logits(h, weight), targets, reduction="sum")


def head_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean",
                       rows: int | None = None) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets)`` in chunks of ``rows`` rows (default :func:`chunk_rows`).

    Args:
      h: (N, d) hidden states.
      weight: (V, d) head (the tied embedding).
      targets: (N,) int64 ids.
      reduction: ``mean`` (over the N rows) or ``sum``.
      rows: rows per chunk; when all N fit in one chunk the plain loss is computed, with no recomputation.
    Returns:
      0-d float32 loss.
    """
    n = h.shape[0]
    rows = chunk_rows(weight.shape[0]) if rows is None else rows
    h, weight = head_inputs(h, weight)
    if n <= rows:
        return F.cross_entropy(head_logits(h, weight), targets, reduction=reduction)
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        if torch.is_grad_enabled():
            # The chunk draws no random numbers: stashing and restoring the CPU and CUDA generators around each of
            # the paper tier's ~50 chunks (the default) would cost about 800 state copies per step for nothing.
            total = total + checkpoint(_chunk_loss, h[start:stop], weight, targets[start:stop], use_reentrant=False,
                                       preserve_rng_state=False)
        else:
            total = total + _chunk_loss(h[start:stop], weight, targets[start:stop])
    return total / n if reduction == "mean" else total


def gumbel_max(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One sample of softmax(logits) per row, drawn without reading anything back to the host.

    argmax_v (logits_v - log E_v), E_v ~ Exp(1): -log E is Gumbel(0, 1), and the argmax of logits plus independent
    Gumbel noise is distributed as softmax(logits) (the Gumbel-max trick). E is floored at the smallest normal
    float so that a zero draw cannot give an infinite score.

    Args:
      logits: (n, V) float logits (no gradient is taken through the draw).
      generator: the noise's generator; the noise is drawn on its device and moved to the logits' if they differ.
    Returns:
      (n,) int64 ids on the logits' device.
    """
    noise = torch.empty(logits.shape, dtype=logits.dtype, device=generator.device)  # (n, V)
    noise.exponential_(generator=generator).clamp_min_(torch.finfo(logits.dtype).tiny).log_()
    return (logits - noise.to(logits.device)).argmax(dim=-1)


def sample_targets(h: torch.Tensor, weight: torch.Tensor, generator: torch.Generator, *,
                   rows: int | None = None) -> torch.Tensor:
    """Targets drawn from the head's own predictive distribution, chunk by chunk without gradients: (N,) int64
    (Sophia's Gauss-Newton-Bartlett estimator samples its labels this way), by :func:`gumbel_max` on the float32
    logits of :func:`head_logits`."""
    rows = chunk_rows(weight.shape[0]) if rows is None else rows
    with torch.no_grad():
        h, weight = head_inputs(h, weight)
        draws = [gumbel_max(head_logits(h[start:start + rows], weight), generator)  # (n,) per chunk
                 for start in range(0, h.shape[0], rows)]
    return torch.cat(draws)
