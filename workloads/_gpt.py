"""A GPT-style decoder-only transformer (nanoGPT's shape, with the modern options the optimizer papers use).

    tokens (B, T) -> embed (B, T, d) [+ learned positions]
      -> n_layer x [ x + Attn(Norm(x)),  x + MLP(Norm(x)) ]        (pre-norm residual blocks)
      -> Norm -> logits = x @ E^T (B, T, V)                         (head tied to the token embedding E)

Options (:class:`GPTConfig`): RMSNorm or LayerNorm, rotary or learned positions, a GELU or SwiGLU MLP, a head tied to
the embedding or its own (``lm_head``), biases in the linear layers or none (GPT-2 has them). The defaults are the
shapes optbench's tiers have always used (tied, GELU, no linear biases). Attention is causal through
``torch.nn.functional.scaled_dot_product_attention`` (flash/memory-efficient kernels on CUDA). ``forward`` has no
data-dependent Python control flow, so ``torch.compile`` traces it without graph breaks.

Initialisation (GPT-2): every weight matrix and the embeddings ~ N(0, 0.02^2), biases zero, norm gains one, and
the two residual output projections of each block ~ N(0, (0.02 / sqrt(2 n_layer))^2) so that the residual stream's
variance does not grow with depth. The small embedding std matters with a tied head: with nn.Embedding's default
N(0, 1) the initial logits have std ~sqrt(d) and the initial loss is far above ln V.

References:
  Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (GPT-2: pre-norm, init).
  Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
  Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", arXiv 2104.09864.
  Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
  Press & Wolf, "Using the Output Embedding to Improve Language Models", EACL 2017 (tied embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from optbench_workloads._loss import head_cross_entropy, head_inputs, head_logits

INIT_STD = 0.02


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """Shape and options of the decoder.

    Attributes:
      vocab_size: number of token ids (the dataset's tokenizer).
      seq_len: maximum context length (learned positions and the rotary table are sized by it).
      n_layer, n_head, d_model: depth, heads, width (d_model divisible by n_head; head dim even for rotary).
      mlp_ratio: hidden width of the MLP as a multiple of d_model.
      norm: ``"rms"`` (RMSNorm) or ``"layer"`` (LayerNorm with bias).
      pos: ``"rope"`` (rotary, no position parameters) or ``"learned"`` (GPT-2's absolute embedding).
      rope_base: rotary frequency base.
      mlp: ``"gelu"`` (d -> hidden -> GELU -> d) or ``"swiglu"`` (Shazeer 2020: proj(silu(gate x) * up x), Llama's).
      mlp_hidden: the MLP's hidden width (default: ``mlp_ratio * d_model``; Llama-style SwiGLU uses 8/3 d so that
        its three matrices hold as many parameters as GELU's two at 4 d).
      tie: the output head is the token embedding (GPT-2, Press & Wolf) or a separate ``lm_head`` matrix.
      bias: biases in every linear layer (GPT-2's 124,439,808 parameters count them) or none.
    """

    vocab_size: int
    seq_len: int
    n_layer: int
    n_head: int
    d_model: int
    mlp_ratio: int = 4
    norm: str = "rms"
    pos: str = "rope"
    rope_base: float = 10000.0
    mlp: str = "gelu"
    mlp_hidden: int | None = None
    tie: bool = True
    bias: bool = False

    @property
    def hidden(self) -> int:
        """The MLP's hidden width."""
        return self.mlp_hidden if self.mlp_hidden is not None else self.mlp_ratio * self.d_model

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.pos not in ("rope", "learned"):
            raise ValueError(f"pos must be 'rope' or 'learned', got {self.pos!r}")
        if self.pos == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError("rotary positions need an even head dimension")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")


def flops_per_sequence(*, n_layer: int, d_model: int, seq_len: int, vocab_size: int, mlp_ratio: int = 4,
                       mlp: str = "gelu", mlp_hidden: int | None = None) -> int:
    """Model FLOPs of one training sequence (forward + backward), by PaLM's model-FLOPs formula.

    Chowdhery et al., "PaLM", 2022, appendix B (as nanoGPT and torchtitan report MFU)::

        per token: 6 N + 12 L H Q T,   N = L (4 + 2 r) d^2 + V d,   per sequence: T x that

    Assumptions: every weight matrix costs 2 FLOPs per parameter per token forward and twice that backward (input and
    weight gradients), so forward + backward = 3 x forward; N counts the blocks' matrices (qkv 3 d^2, output d^2,
    MLP 2 r d^2) and the head V d (tied to the embedding, but a real matmul), and excludes the embedding lookups
    (gathers, no FLOPs) and the norm gains; attention scores and their weighted sum are 2 x 2 T d per token and
    layer forward over the full T x T (H Q = d; the causal mask's skipped half is counted, as PaLM does). Left out:
    softmax, norms, activations, rotary, the loss (a few percent at the tiny size, under 1% at paper size).
    A SwiGLU MLP of hidden width h holds 3 h d weights (GELU's: 2 h d, h = r d); biases are left out like norms.
    """
    hidden = mlp_hidden if mlp_hidden is not None else mlp_ratio * d_model
    mlp_weights = (3 if mlp == "swiglu" else 2) * hidden * d_model
    n = n_layer * (4 * d_model**2 + mlp_weights) + vocab_size * d_model
    return seq_len * (6 * n + 12 * n_layer * d_model * seq_len)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g over the last dimension (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 (bf16 squares lose precision), return in the input's dtype.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight.type_as(x)


def make_norm(cfg: GPTConfig) -> nn.Module:
    """The configured normalisation layer over ``cfg.d_model`` features."""
    return RMSNorm(cfg.d_model) if cfg.norm == "rms" else nn.LayerNorm(cfg.d_model)


def rotary_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (seq_len, head_dim // 2), float32.

    Pair i of a head rotates by angle t * base^(-2i / head_dim) at position t.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive halves of each head vector (the "rotate-half" layout).

    Args:
      x: (B, H, T, hd).
      cos, sin: (T, hd/2).
    Returns:
      (B, H, T, hd), same dtype as ``x``.
    """
    x1, x2 = x.float().chunk(2, dim=-1)  # each (B, H, T, hd/2)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual_out = True  # scaled init (see GPT.init_weights)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # each (B, T, d)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        if rotary is not None:
            cos, sin = rotary[0][:t], rotary[1][:t]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """d -> hidden -> GELU -> d, or SwiGLU: proj(silu(gate(x)) * fc(x)) with separate gate and up matrices (Llama's
    layout, so that a matrix optimizer sees each as its own matrix)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias)
        self.gate = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias) if cfg.mlp == "swiglu" else None
        self.proj = nn.Linear(cfg.hidden, cfg.d_model, bias=cfg.bias)
        self.proj.residual_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return self.proj(F.gelu(self.fc(x)))
        return self.proj(F.silu(self.gate(x)) * self.fc(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(Norm(x)), then x + MLP(Norm(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1, self.attn = make_norm(cfg), CausalSelfAttention(cfg)
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rotary)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """The decoder; ``forward(tokens (B, T) int) -> logits (B, T, V)``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = make_norm(cfg)
        # An untied head is the model's last Linear (submissions that find the output head look for it there).
        self.lm_head = None if cfg.tie else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.pos == "rope":
            cos, sin = rotary_tables(cfg.seq_len, cfg.d_model // cfg.n_head, cfg.rope_base)
            # Buffers move with .to(device) but are not parameters and not saved (recomputed from the config).
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None

    @property
    def head_weight(self) -> torch.Tensor:
        """The (V, d) output matrix: the token embedding when tied, else ``lm_head``'s."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 initialisation drawn from ``generator`` (see the module docstring)."""
        resid_std = INIT_STD / math.sqrt(2 * self.cfg.n_layer)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    std = resid_std if getattr(module, "residual_out", False) else INIT_STD
                    nn.init.normal_(module.weight, 0.0, std, generator=generator)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, 0.0, INIT_STD, generator=generator)
                elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                    nn.init.ones_(module.weight)
                    if getattr(module, "bias", None) is not None:
                        nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, *,
                reduction: str = "mean") -> torch.Tensor:
        """Logits for next-token prediction, or (with ``targets``) their cross-entropy, computed in chunks of rows
        so that the logits of the whole batch never exist at once (:func:`head_cross_entropy`).

        Args:
          tokens: (B, T) integer ids, T <= cfg.seq_len.
          targets: (B, T) ids to predict, or None.
          reduction: ``mean`` (per token) or ``sum`` of the loss.
        Returns:
          (B, T, V) float32 logits (never rounded to bf16 under autocast: :func:`head_logits`), position t seeing
          tokens 0..t only; with ``targets`` the 0-d float32 loss.
        """
        h = self.features(tokens)  # (B, T, d)
        if targets is None:  # head: (B T, d) x (V, d)^T -> (B, T, V) float32, as the loss sees them
            return head_logits(*head_inputs(h.flatten(0, 1), self.head_weight)).unflatten(0, h.shape[:2])
        return head_cross_entropy(h.flatten(0, 1), self.head_weight, targets.reshape(-1), reduction=reduction)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The normalised last hidden states (B, T, d) that the head maps to logits."""
        t = tokens.shape[1]
        x = self.embed(tokens)  # (B, T, d)
        if self.pos_embed is not None:
            x = x + self.pos_embed.weight[:t]
        rotary = (self.rope_cos, self.rope_sin) if self.rope_cos is not None else None
        for block in self.blocks:
            x = block(x, rotary)
        return self.norm(x)


def build_gpt(cfg: GPTConfig, generator: torch.Generator) -> GPT:
    """A freshly initialised decoder on the CPU, every random draw taken from ``generator``."""
    model = GPT(cfg)
    model.init_weights(generator)
    return model


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (the tied embedding/head counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
