"""Cross-entropy of a language-model head without the logits of the whole batch in memory.

The head turns hidden states h (N, d) into logits h W^T (N, V). With GPT-2's V = 50257, the fp32 logits of
8 x 1024 tokens and their gradient take 2 x 1.6 GB, more than the rest of a 124M model's activations. Here the rows
are taken in chunks of ``rows`` (about ``LOSS_CHUNK_ELEMENTS`` logits each); each chunk's loss is computed under
activation checkpointing, so only h, W and the targets are kept for the backward pass, which recomputes one
chunk's logits at a time. Value and gradient are the plain loss's (up to the order of the float sums): the
cross-entropy summed over chunks is the cross-entropy summed over rows.

References:
  Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", arXiv 2411.09009 (the memory problem).
  Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv 1604.06174 (recomputation in backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOSS_CHUNK_ELEMENTS = 1 << 25  # logits per chunk: 32M, 128 MB in fp32 (about 670 rows at V = 50257)


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk for a head of ``vocab_size`` outputs."""
    return max(1, LOSS_CHUNK_ELEMENTS // vocab_size)


def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of one chunk: h (n, d), weight (V, d), targets (n,) -> 0-d float32."""
    logits = F.linear(h, weight).float()  # (n, V): in fp32 whatever the autocast dtype of the matmul
    return F.cross_entropy(logits, targets, reduction="sum")


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
    if n <= rows:
        logits = F.linear(h, weight).float()  # (N, V)
        return F.cross_entropy(logits, targets, reduction=reduction)
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, h[start:stop], weight, targets[start:stop], use_reentrant=False)
        else:
            total = total + _chunk_loss(h[start:stop], weight, targets[start:stop])
    return total / n if reduction == "mean" else total


def sample_targets(h: torch.Tensor, weight: torch.Tensor, generator: torch.Generator, *,
                   rows: int | None = None) -> torch.Tensor:
    """Targets drawn from the head's own predictive distribution, chunk by chunk without gradients: (N,) int64
    (Sophia's Gauss-Newton-Bartlett estimator samples its labels this way)."""
    rows = chunk_rows(weight.shape[0]) if rows is None else rows
    out = []
    with torch.no_grad():
        for start in range(0, h.shape[0], rows):
            probs = torch.softmax(F.linear(h[start:start + rows], weight).float(), dim=-1)  # (n, V)
            draw = torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(1)
            out.append(draw.to(h.device))
    return torch.cat(out)
