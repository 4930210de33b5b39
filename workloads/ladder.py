"""The model-size ladder of the language-modelling workloads: named decoder shapes from 0.05M to 1.2B parameters.

``optbench run -w c4 --size paper --model 360m --tokens 1x`` trains the ``360m`` rung on the paper tier's data
(corpus, tokenizer, validation, evaluation period); ``--size tiny --model t2`` a CPU-sized rung on the tiny tier's.
The rung replaces the tier's model (layers, width, heads, MLP, norm, positions, head, sequence length) and default
batch; ``--tokens`` sets the budget (:mod:`optbench.engine.prepared`). The table is in docs/WORKLOADS.md
("Model-size ladder"); ``python -m optbench_workloads.ladder --table`` prints it and the memory table.

Parameter counts are computed from the shapes (:func:`param_shapes`), never typed:

* **total**: every parameter once (a tied embedding/head once), at the rung's nominal vocabulary. The Chinchilla
  budget (Hoffmann et al. 2022, 20 tokens per parameter = ``1x``) counts this one: Hoffmann et al. count all
  parameters, embeddings included (Kaplan et al.'s laws, and the critical-batch-size paper's size names, count the
  non-embedding ones; Pearce & Song 2024 trace the two papers' different exponents largely to this).
* **non-embedding**: total minus the token embedding, the learned positions and an untied output head (the
  vocabulary matrices): Kaplan et al.'s N, and what the 150m/300m/600m/1.2b names count.

The nominal vocabulary is the one the matched paper used (GPT-2's 50,257, GPT-NeoX's 50,304 or T5's 32,128, as
embedding rows); a trial uses its tier's
tokenizer (BPE-8192 on tiny/small, GPT-2 on paper), so its embedding, and its total, follow the tier: the trial
records the counts at the vocabulary it ran with (``model_config``).

Shapes: 124m is GPT-2 small exactly (124,439,808 parameters: biases, LayerNorm, learned positions, tied head). The
20m/150m/300m/600m/1.2b rungs are the critical-batch-size paper's 19M/151M/302M/604M/1.2B as its repository's
configs give them (``_CBS``); 360m and 660m are SOAP's, whose totals they reach with T5's vocabulary and an untied
head; 210m is Semenov et al.'s Llama-style 24x768 from their scripts. Which shapes were read from a paper's
configuration and which were chosen to match a parameter count is each rung's ``note``.

Targets for ladder rungs are PROVISIONAL: the tier's own target is kept (set for the tier's model), so a ladder trial
is scored at its budget (``full_budget``, the scaling recipe) or against ``--target``; the record's ``target_kind``
says which.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optbench.api import Size
from optbench.errors import UsageError
from optbench.plugins.memory import MemoryProfile, Param, total_params

GPT2_VOCAB, BPE_VOCAB = 50257, 8192
LOSS_CHUNK_BYTES = 4 * 4 * (1 << 25)  # a loss chunk's fp32 logits, softmax, gradient and a spare (see _loss)
MODEL_KEYS = ("n_layer", "n_head", "d_model", "seq_len", "norm", "pos", "mlp", "mlp_hidden", "tie", "bias")


@dataclass(frozen=True, kw_only=True)
class Rung:
    """One named model size.

    Attributes:
      name: what ``--model`` takes.
      n_layer, d_model, n_head, seq_len: depth, width, heads, context.
      norm, pos, mlp, mlp_hidden, tie, bias: the architecture options (:class:`optbench_workloads._gpt.GPTConfig`).
      vocab: the nominal vocabulary the counts in the table are at (the matched paper's tokenizer).
      batch_tokens: default tokens per step (batch = batch_tokens / seq_len sequences).
      lr: the peak learning rate a paper gives for this size (None: none given; tune it).
      matches: which paper(s) the rung stands for.
      note: where the shape comes from (read from the paper, or chosen to match its count).
      cpu: a rung of the tiny ladder (seconds per step on a CPU).
    """

    name: str
    n_layer: int
    d_model: int
    n_head: int
    seq_len: int
    vocab: int
    batch_tokens: int
    norm: str = "rms"
    pos: str = "rope"
    mlp: str = "gelu"
    mlp_hidden: int | None = None
    tie: bool = True
    bias: bool = False
    lr: float | None = None
    matches: str = ""
    note: str = ""
    cpu: bool = False

    def options(self) -> dict[str, Any]:
        """The Size options this rung sets (the model's; the tier keeps its data and evaluation options)."""
        return {k: getattr(self, k) for k in MODEL_KEYS}

    @property
    def batch_size(self) -> int:
        return max(1, self.batch_tokens // self.seq_len)


_TINY = {"seq_len": 64, "vocab": BPE_VOCAB, "batch_tokens": 16 * 64, "cpu": True,
         "matches": "tiny CPU ladder (issue 23)", "note": "chosen: non-embedding counts ~0.05M-2M on the tiny tier"}
_LLAMA = {"norm": "rms", "pos": "rope", "mlp": "swiglu"}


def swiglu_hidden(d: int) -> int:
    """Llama's SwiGLU width: 8/3 d rounded to a multiple of 64 (its three matrices hold GELU-at-4d's 8 d^2)."""
    return 64 * round(8 * d / 3 / 64)



# The critical-batch-size family, read from the paper's configs (github.com/hlzhang109/critical-batch-size,
# configs/critical-bs/{85M,151M,302M,604M,1.2B}.yaml and configs/small-proxies/19M.yaml): OLMo decoders with rotary
# positions, LayerNorm, GELU at 4d, no biases, an untied head, context 512, AdamW at lr 1e-3 with betas (0.9, 0.95);
# GPT-NeoX's tokenizer (embedding 50,304) for 85M-1.2B, T5's (32,128) for the small proxies. Two differences from
# optbench's decoder: OLMo's LayerNorm has no bias and the configs add a LayerNorm on q and k (2 d + 2 d parameters
# per layer, about 0.2% of 151M; not modelled). SOAP (C4, T5's tokenizer) uses the same codebase and group.
NEOX_VOCAB, T5_EMBED = 50304, 32128
_CBS = {"norm": "layer", "pos": "rope", "mlp": "gelu", "tie": False, "vocab": NEOX_VOCAB, "seq_len": 512,
        "batch_tokens": 256 * 512, "lr": 1e-3}
CBS_NOTE = "shape, context, batch and lr from the CBS repository's {} config"
GPT3_LR = "Brown et al. 2020, Table 2.1 (GPT-3 at the nearest size)"

RUNGS: tuple[Rung, ...] = (
    Rung(name="t1", n_layer=2, d_model=48, n_head=2, **_TINY),
    Rung(name="t2", n_layer=2, d_model=96, n_head=3, **_TINY),
    Rung(name="t3", n_layer=4, d_model=128, n_head=4, **_TINY),
    Rung(name="t4", n_layer=4, d_model=192, n_head=6, **_TINY),
    Rung(name="20m", n_layer=6, d_model=512, n_head=8, **{**_CBS, "vocab": T5_EMBED},
         matches="CBS small proxy 19M", note=CBS_NOTE.format("small-proxies/19M")),
    Rung(name="60m", n_layer=8, d_model=768, n_head=12, mlp_hidden=swiglu_hidden(768), seq_len=1024,
         vocab=GPT2_VOCAB, batch_tokens=256 * 1024, **_LLAMA, matches="ladder step (no paper at this size)",
         note="chosen: 8x768 Llama-style, ~57M non-embedding"),
    Rung(name="124m", n_layer=12, d_model=768, n_head=12, seq_len=1024, vocab=GPT2_VOCAB, batch_tokens=512 * 1024,
         norm="layer", pos="learned", mlp="gelu", tie=True, bias=True, lr=6e-4,
         matches="GPT-2 small; nanoGPT; Semenov et al. 124M; optbench's paper tier",
         note=f"GPT-2 small exactly (Radford et al. 2019); batch 0.5M tokens and lr: {GPT3_LR}"),
    Rung(name="150m", n_layer=12, d_model=1024, n_head=16, **_CBS,
         matches="CBS 151M; Seesaw, AdEMAMix, Anytime, full Gauss-Newton at 150M", note=CBS_NOTE.format("151M")),
    Rung(name="210m", n_layer=24, d_model=768, n_head=12, mlp_hidden=swiglu_hidden(768), seq_len=512,
         vocab=GPT2_VOCAB, batch_tokens=256 * 512, lr=1e-3, **_LLAMA, matches="Semenov et al. 210M (Llama-style)",
         note="24x768, 12 heads, context 512, 16 x 16 accumulated sequences and AdamW lr 1e-3 from the benchmark's "
              "scripts (github.com/epfml/llm-optimizer-benchmark); SwiGLU hidden 8/3 d = 2048; head tied"),
    Rung(name="300m", n_layer=24, d_model=1024, n_head=16, **{**_CBS, "batch_tokens": 512 * 512},
         matches="CBS 302M; Seesaw and Anytime 300M", note=CBS_NOTE.format("302M")),
    Rung(name="360m", n_layer=24, d_model=1024, n_head=16, **{**_CBS, "vocab": T5_EMBED, "lr": 3e-4},
         matches="SOAP 360M",
         note=f"24x1024 with T5's vocabulary untied reaches SOAP's 360M (368M in all); shape, context and batch "
              f"unverified against the paper; lr: {GPT3_LR} (350M)"),
    Rung(name="600m", n_layer=12, d_model=2048, n_head=16, mlp_hidden=8192, **{**_CBS, "batch_tokens": 512 * 512},
         matches="CBS 604M; Seesaw 600M", note=CBS_NOTE.format("604M")),
    Rung(name="660m", n_layer=24, d_model=1408, n_head=22, **{**_CBS, "vocab": T5_EMBED, "lr": 2.5e-4},
         matches="SOAP 660M",
         note=f"24x1408 (head dim 64) with T5's vocabulary untied reaches SOAP's 660M (662M in all); shape, context "
              f"and batch unverified against the paper; lr: {GPT3_LR} (760M)"),
    Rung(name="1.2b", n_layer=24, d_model=2048, n_head=32, **_CBS, matches="CBS 1.2B; Wen et al. 1.2B",
         note=CBS_NOTE.format("1.2B")),
)
LADDER: Mapping[str, Rung] = {r.name: r for r in RUNGS}


# --------------------------------------------------------------------------------------------------- counting
def param_shapes(opts: Mapping[str, Any], vocab: int) -> tuple[Param, ...]:
    """Every parameter of the decoder with ``opts`` (Size options or :meth:`Rung.options`) at ``vocab``, in the
    model's order; a tied head is the embedding (listed once)."""
    n, d = int(opts["n_layer"]), int(opts["d_model"])
    hidden = opts.get("mlp_hidden") or 4 * d
    bias, layer = bool(opts.get("bias", False)), opts.get("norm", "rms") == "layer"
    norm = (Param((d,), "vector"),) * (2 if layer else 1)  # LayerNorm: gain and bias; RMSNorm: gain
    linear = (lambda o, i: (Param((o, i), "matrix"), *((Param((o,), "vector"),) if bias else ())))
    mlp = (*linear(hidden, d), *(linear(hidden, d) if opts.get("mlp", "gelu") == "swiglu" else ()),
           *linear(d, hidden))
    block = (*norm, *linear(3 * d, d), *linear(d, d), *norm, *mlp)
    out = [Param((vocab, d), "embed")]
    if opts.get("pos", "rope") == "learned":
        out.append(Param((int(opts["seq_len"]), d), "pos"))
    out += [*block * n, *norm]
    if not opts.get("tie", True):
        out.append(Param((vocab, d), "head"))
    return tuple(out)


def param_counts(opts: Mapping[str, Any], vocab: int) -> tuple[int, int]:
    """(total, non-embedding) parameters (module docstring: what each counts)."""
    params = param_shapes(opts, vocab)
    total = total_params(params)
    return total, total - total_params(params, roles=("embed", "pos", "head"))


# --------------------------------------------------------------------------------------------------- memory
def activation_bytes(opts: Mapping[str, Any], *, autocast: bool) -> int:
    """Bytes one sequence keeps for the backward pass (flash attention: no T x T scores kept).

    Per layer and token, what autograd saves, counted from :mod:`optbench_workloads._gpt`: the two norms' fp32
    inputs (2 d) and the rotary's fp32 copies of q and k (2 d) at 4 bytes; at the activation width (2 bytes under
    bf16 autocast, else 4) the norms' outputs (2 d), q, k, v (3 d), the rotated q, k (2 d), the attention output and
    projection input (2 d), and the MLP's hidden activations (2 h for GELU: pre- and post-activation; 4 h for
    SwiGLU: gate, up, silu, product), and the attention's log-sum-exp (H fp32). Per token beside the layers: the
    embedding output, the final norm's input and output, the head's input and one spare row (5 d fp32; autocast
    keeps a little more than the count above). Checked against the tensors autograd saves on the CPU, in fp32 and
    under bf16 autocast (tests/test_ladder.py): never below them, at most 20% above.
    """
    d, t, n = int(opts["d_model"]), int(opts["seq_len"]), int(opts["n_layer"])
    hidden = int(opts.get("mlp_hidden") or 4 * d)
    width = 2 if autocast else 4
    rotary = 2 * d if opts.get("pos", "rope") == "rope" else 0
    mlp = (4 if opts.get("mlp", "gelu") == "swiglu" else 2) * hidden
    per_layer = 4 * (2 * d + rotary + int(opts["n_head"])) + width * (2 * d + 3 * d + rotary + 2 * d + mlp)
    return t * (n * per_layer + 4 * 5 * d)


def memory_profile(opts: Mapping[str, Any], vocab: int, *, autocast: bool) -> MemoryProfile:
    """The decoder's :class:`~optbench.plugins.memory.MemoryProfile` at one size. The transient is a loss chunk and,
    under autocast, the bf16 copies of the weights that autocast casts once per forward and keeps for backward."""
    params = param_shapes(opts, vocab)
    casts = 2 * sum(p.size for p in params) if autocast else 0
    return MemoryProfile(params=params, activation_bytes=activation_bytes(opts, autocast=autocast),
                         transient_bytes=LOSS_CHUNK_BYTES + casts)


# --------------------------------------------------------------------------------------------------- sizes
def rung(name: str) -> Rung:
    """The rung called ``name``, else a usage error listing the ladder."""
    if name not in LADDER:
        raise UsageError(f"no model size {name!r}; --model takes: {', '.join(LADDER)}")
    return LADDER[name]


def model_vocab(size: Size, fallback: int) -> int:
    """The vocabulary a size's model is counted at: the tier's tokenizer pin, else ``fallback``."""
    return int(size.options.get("vocab") or fallback)


def with_model(size: Size, name: str) -> Size:
    """``size`` (a tier: data, tokenizer, evaluation) with the model of rung ``name``, named ``TIER+NAME`` so that
    its results are filed apart. The batch is the rung's; the budget, step hint and target stay the tier's until
    the trial's token budget replaces them (:func:`optbench.engine.prepared.prepare`); the target is provisional.
    """
    r = rung(name)
    vocab = model_vocab(size, r.vocab)
    total, core = param_counts(r.options(), vocab)
    options = {**size.options, **r.options(), "model": r.name, "params_total": total, "params_non_embedding": core,
               "params_vocab": vocab, "reference_lr": r.lr}
    note = (f"{r.name} rung ({r.n_layer}x{r.d_model}, {total / 1e6:.2f}M params, {core / 1e6:.2f}M non-embedding) "
            f"on the {size.name} tier; PROVISIONAL target (the tier's, set for its own model): score at the budget "
            f"or give --target")
    return dataclasses.replace(size, name=f"{size.name}+{r.name}", options=options, batch_size=r.batch_size,
                               micro_batch_size=None, note=note)


def model_config(size: Size) -> dict[str, Any]:
    """What the record says about the model of ``size``: its shape and options, the tier's vocabulary (None: the
    dataset's, read at set-up) and the parameter counts at ``params_vocab`` (that one, else a ladder rung's nominal
    vocabulary; no counts for a tier of ``lm`` without ``--model``)."""
    o = size.options
    counted = o.get("vocab") or o.get("params_vocab")
    out: dict[str, Any] = {"model": o.get("model"), "vocab": o.get("vocab"), "params_vocab": counted,
                           "reference_lr": o.get("reference_lr")}
    out.update({k: o.get(k, default) for k, default in zip(MODEL_KEYS, (None,) * 4 + ("rms", "rope", "gelu", None,
                                                                                      True, False), strict=True)})
    if counted is not None:
        out["params_total"], out["params_non_embedding"] = param_counts(o, int(counted))
    return out


# --------------------------------------------------------------------------------------------------- the tables
# The GPUs of docs/WORKLOADS.md's memory table, as torch reports their total memory (GiB): an 80 GB A100/H100 and a
# 141 GB H200 (139.8 GiB measured on optbench's H200).
GPUS = (("80 GB", 79.2), ("141 GB", 139.8))
OPTIMIZERS = ("adamw", "muon", "soap", "shampoo")


MICRO_CAP = 1024  # the table's micro-batches stop here: no ladder batch is larger (1,024 sequences at 1.2b)


def _micro(n: int) -> str:
    return f">={MICRO_CAP}" if n >= MICRO_CAP else str(n)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def shapes_table() -> str:
    """The ladder as a Markdown table: shapes, options, counts at the nominal vocabulary, batch, lr, paper."""
    head = ["model", "layers x width (heads)", "MLP (hidden)", "norm / pos / head", "vocab", "seq", "batch (tokens)",
            "params", "non-embedding", "lr", "matches"]
    lines = [_row(head), _row(["---"] * len(head))]
    for r in RUNGS:
        total, core = param_counts(r.options(), r.vocab)
        head_kind = ("tied" if r.tie else "untied") + (", biases" if r.bias else "")
        lines.append(_row([f"`{r.name}`", f"{r.n_layer} x {r.d_model} ({r.n_head})",
                           f"{r.mlp} ({r.mlp_hidden or 4 * r.d_model})", f"{r.norm} / {r.pos} / {head_kind}",
                           f"{r.vocab:,}", str(r.seq_len), f"{r.batch_size} x {r.seq_len} = {r.batch_tokens:,}",
                           f"{total:,}", f"{core:,}", f"{r.lr:g}" if r.lr else "-", r.matches]))
    return "\n".join(lines)


def memory_table() -> str:
    """Per rung (bf16 autocast, the nominal vocabulary): activations per sequence, and per optimizer the weights +
    gradients + state in GiB and the largest micro-batch (sequences) the plan allows on each of :data:`GPUS`
    (0: does not fit, not even one sequence)."""
    from optbench.plugins.memory import GIB, fixed_bytes, largest_fitting

    head = ["model", "activations / seq (GiB)"]
    head += [f"{o}: GiB, micro @ {' / '.join(g for g, _ in GPUS)}" for o in OPTIMIZERS]
    lines = [_row(head), _row(["---"] * len(head))]
    for r in RUNGS:
        prof = memory_profile(r.options(), r.vocab, autocast=True)
        cells = [f"`{r.name}`", f"{prof.activation_bytes / GIB:.3f}"]
        for o in OPTIMIZERS:
            fits = " / ".join(_micro(largest_fitting(prof, o, int(c * GIB), limit=MICRO_CAP)) for _, c in GPUS)
            cells.append(f"{fixed_bytes(prof, o) / GIB:.2f}, {fits}")
        lines.append(_row(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m optbench_workloads.ladder --table`` (both Markdown tables of docs/WORKLOADS.md) or ``--json``
    (the rungs and their counts)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if "--json" in args:
        print(json.dumps({r.name: {**dataclasses.asdict(r), "params": param_counts(r.options(), r.vocab)}
                          for r in RUNGS}, indent=1))
    else:
        print(shapes_table(), memory_table(), sep="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
