"""Causal language modelling with a GPT-style decoder: ``wikitext`` and ``c4`` (calibrated tiers), and ``lm`` on
any prepared text dataset, your own included (``--size tiny@NAME``, uncalibrated), all with one task class.

Data (prepared by ``optbench data prepare wikitext103`` / ``c4``): each split is one flat file of token ids with an
end-of-text id after every document. Training batches are packed nanoGPT-style: B windows of T + 1 consecutive
tokens at offsets drawn uniformly with the trial's generator (inputs = window[:-1], targets = window[1:]); windows
cross document boundaries, the end-of-text token marks them. A train file that fits (at most
``RESIDENT_MAX_TOKENS``) lives on the device as int32 and a batch is one gather there; a larger one stays a memory
map and each batch is gathered on the host, pinned and copied asynchronously (:class:`MappedTokens`).

Data order: the offsets are a function of the trial's data generator's state only (seeded from the trial's seed),
so a resumed trial, which restores that state, draws the same batches. A resident file, and any file on the CPU,
draws them with ``torch.randint`` from the generator itself. A memory-mapped file with a CUDA generator draws them
on the host, so that no step waits for the device to learn where to read: NumPy's PCG64 seeded by a hash of the
generator's seed and Philox offset (both host-side values), after which the offset is advanced by one Philox block
so that the next batch draws anew (:func:`host_offsets`). The two routes give different batches for one seed on
CUDA (each is deterministic); on the CPU they are the same, and the batches are those of earlier versions.

Validation: the first K non-overlapping windows of ``val.bin`` (window i covers tokens [iT, iT + T]; every one of
the K T target tokens is predicted once), K per size. Metric: mean cross-entropy in nats per token (``val_loss``,
lower is better), with ``val_perplexity = exp(val_loss)`` beside it. Loss values depend on the tokenizer, so each
size of ``wikitext`` and ``c4`` names the tokenizer its target was set with and refuses data prepared with another;
``lm``'s sizes take the dataset's tokenizer and vocabulary as they are, and their targets are marked uncalibrated.

References:
  Merity et al., "Pointer Sentinel Mixture Models", ICLR 2017 (WikiText-103).
  Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer", JMLR 2020 (C4).
  Karpathy, nanoGPT (github.com/karpathy/nanoGPT): token-file packing and the GPT-2 124M configuration.
  Zhang et al., "How Does Critical Batch Size Scale in Pre-training?", arXiv 2410.21676 (C4 decoder settings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optbench.api import Budget, EvalPeriod, Goal, Metric, Role, Size, named_params
from optbench.errors import DataMissingError, UsageError
from optbench_workloads._gpt import GPTConfig, build_gpt, flops_per_sequence
from optbench_workloads._loss import check_fp32_head, head_cross_entropy, sample_targets
from optbench_workloads import ladder

RESIDENT_MAX_TOKENS = 1 << 30  # int32 on the device: at most 4 GiB; larger train files are read from a memory map

# Tokenizers the targets were set with, as (kind, vocab_size) of the manifest's "tokenizer" entry: ``optbench data
# prepare``'s byte-level BPE of 8192 ids (tiny, small) and GPT-2's BPE through tiktoken (paper).
BPE_8K = {"tokenizer": "bpe", "vocab": 8192}
GPT2 = {"tokenizer": "gpt2", "vocab": 50257}

_TINY_MODEL = {"n_layer": 2, "n_head": 2, "d_model": 64, "seq_len": 64, "norm": "rms", "pos": "rope"}
_SMALL_MODEL = {"n_layer": 6, "n_head": 6, "d_model": 384, "seq_len": 256, "norm": "rms", "pos": "rope"}
_PAPER_MODEL = {"n_layer": 12, "n_head": 12, "d_model": 768, "seq_len": 1024, "norm": "layer", "pos": "learned"}

_TINY_NOTE = ("2x64 decoder (0.62M params), seq 64, BPE-8192; PROVISIONAL: calibrated on a stand-in corpus (English "
              "software documentation), where adamw defaults reach it at ~700-750 of 1500 steps; re-measure on the "
              "real corpus")


def _sizes(dataset: str, *, tiny: float, small: float, paper: float, paper_steps: int, paper_tokens: int,
           paper_batch: int, paper_eval: int) -> dict[str, Size]:
    """The three tiers of one corpus; only the targets and the paper tier's length differ between corpora."""
    return {
        "tiny": Size(
            name="tiny", target=tiny, batch_size=16, step_hint=1_000,
            budget=Budget(max_steps=1_500, max_seconds=240.0), eval_every=EvalPeriod(steps=100),
            options={**_TINY_MODEL, "val_sequences": 64, "max_train_tokens": 20_000_000, "autocast": False,
                     **BPE_8K},
            dataset=dataset, note=_TINY_NOTE,
        ),
        "small": Size(
            name="small", target=small, batch_size=64, step_hint=5_000,
            budget=Budget(max_steps=10_000, max_seconds=600.0), eval_every=EvalPeriod(steps=500),
            options={**_SMALL_MODEL, "val_sequences": 512, "max_train_tokens": None, "autocast": True,
                     **BPE_8K},
            dataset=dataset,
            note="6x384 decoder (14M params), seq 256, 16k tokens/step, BPE-8192; PROVISIONAL: not yet measured "
                 "on a GPU, target is an estimate of adamw's loss at ~half the budget",
        ),
        "paper": Size(
            name="paper", target=paper, batch_size=paper_batch, step_hint=paper_steps, micro_batch_size=32,
            budget=Budget(max_steps=2 * paper_steps, max_seconds=4 * 3600.0), eval_every=EvalPeriod(steps=paper_eval),
            options={**_PAPER_MODEL, "val_sequences": 1024, "max_train_tokens": None, "autocast": True,
                     **GPT2, "min_train_tokens": paper_tokens},
            dataset=dataset,
            note=f"GPT-2 small shape (12x768, 12 heads, 124M params tied), seq 1024, {paper_batch} x 1024 tokens/step "
                 "(accumulated in micro-batches of 32 sequences), GPT-2 vocab; PROVISIONAL: estimate of adamw's loss "
                 "at step_hint, re-measure on a GPU",
        ),
    }


# Targets (nats per token). tiny: see _TINY_NOTE and docs/WORKLOADS.md. small, paper: estimates, to be measured.
# The paper tier's batches are the papers': C4 takes GPT-2's (and nanoGPT's) ~0.5M tokens per step, 512 x 1024, for
# ~Chinchilla's 20 tokens per parameter (2.5B tokens, 4,800 steps); WikiText-103 (~120M GPT-2 tokens) takes
# 128 x 1024 (131k tokens, the scale of the WikiText-103 transformer papers' batches) for ~2 epochs (1,850 steps).
# Both accumulate micro-batches of 32 sequences, and the loss is chunked (optbench_workloads._loss): the fp32 logits
# of a micro-batch are never held at once, so 32 x 1024 tokens fit an 80 GB GPU beside the activations.
WIKITEXT_SIZES = _sizes("wikitext103", tiny=4.9, small=3.9, paper=3.3, paper_steps=1_850, paper_tokens=100_000_000,
                        paper_batch=128, paper_eval=200)
C4_SIZES = _sizes("c4", tiny=4.9, small=4.2, paper=3.4, paper_steps=4_800, paper_tokens=2_500_000_000,
                  paper_batch=512, paper_eval=500)


@dataclass(frozen=True, kw_only=True)
class TokenBatch:
    """B packed windows on the task's device."""

    inputs: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64: inputs shifted left by one


class ResidentTokens:
    """A token file held on the device as int32; a batch of windows is one gather there."""

    def __init__(self, tokens: Any, device: torch.device) -> None:
        import numpy as np

        self.device = device
        self.tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int32)).to(device, non_blocking=True)  # (N,)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def draw(self, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` windows of ``length`` tokens at offsets drawn from ``generator`` on its device:
        (B, length) int64 on the device."""
        high = len(self) - length + 1  # last valid start + 1
        offsets = torch.randint(0, high, (batch_size,), generator=generator, device=generator.device)  # (B,)
        idx = offsets.to(self.device)[:, None] + torch.arange(length, device=self.device)  # (B, L)
        return self.tokens[idx].long()


PHILOX_BLOCK = 4  # a CUDA generator's offset moves in multiples of 4 (one Philox draw of four 32-bit numbers)


def host_offsets(generator: torch.Generator, high: int, count: int) -> Any:
    """``count`` offsets uniform in [0, high), drawn on the host: (count,) int64 NumPy array.

    A CPU generator draws them itself (``torch.randint``: the stream of the resident route). A device generator's
    stream lives on the device, where reading it would stall the host every step; its seed and Philox offset are
    host-side values, so the offsets come from a NumPy generator seeded by both, and the offset then moves on by one
    Philox block: a function of the generator's state alone, which checkpoints save and restore.
    """
    import hashlib

    import numpy as np

    if generator.device.type == "cpu":
        return torch.randint(0, high, (count,), generator=generator, device=generator.device).numpy()
    offset = generator.get_offset()
    key = hashlib.sha256(f"{generator.initial_seed()}:{offset}".encode()).digest()[:8]
    generator.set_offset(offset + PHILOX_BLOCK)
    return np.random.default_rng(int.from_bytes(key, "little")).integers(0, high, count, dtype=np.int64)


class MappedTokens:
    """A token file too large for the device: each batch is gathered from the memory map on the host, then copied.

    Per step, with nothing waiting for the device: offsets drawn on the host (:func:`host_offsets`), B contiguous
    slices of the map copied into one (B, L) int32 array (half the bytes of int64 rows on the bus; ids
    fit: vocabularies are below 2^31), pinned on CUDA and copied asynchronously, widened to int64 on the device.
    PyTorch's caching host allocator keeps a pinned block from reuse until its copy has completed, so the buffer of
    one step is never overwritten while the device still reads it.
    """

    def __init__(self, tokens: Any, device: torch.device) -> None:
        self.tokens, self.device = tokens, device

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def draw(self, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """Like :meth:`ResidentTokens.draw`: (B, length) int64 on the device."""
        import numpy as np

        offsets = host_offsets(generator, len(self) - length + 1, batch_size)  # (B,) on the host
        rows = np.empty((batch_size, length), dtype=np.int32)  # (B, L)
        for i, o in enumerate(offsets.tolist()):  # a NumPy array: no tensor is read here
            rows[i] = self.tokens[o:o + length]
        host = torch.from_numpy(rows)
        if self.device.type == "cuda":
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True).long()


def token_source(tokens: Any, device: torch.device, *, max_tokens: int | None) -> ResidentTokens | MappedTokens:
    """The train tokens (optionally only the first ``max_tokens``) as a device tensor or, if large, a memmap."""
    if max_tokens is not None:
        tokens = tokens[: int(max_tokens)]
    if len(tokens) <= RESIDENT_MAX_TOKENS:
        return ResidentTokens(tokens, device)
    return MappedTokens(tokens, device)


def validation_windows(tokens: Any, *, seq_len: int, count: int) -> tuple[Any, Any]:
    """The first ``count`` non-overlapping windows of ``tokens`` as (inputs, targets), each (K, seq_len) int64.

    Fewer windows are returned when the split is short (K = min(count, (N - 1) // seq_len)).

    Raises:
      UsageError: the split has fewer than ``seq_len + 1`` tokens.
    """
    import numpy as np

    k = min(int(count), (len(tokens) - 1) // seq_len)
    if k < 1:
        raise UsageError(f"the validation split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
    flat = np.asarray(tokens[: k * seq_len + 1], dtype=np.int64)
    return flat[:-1].reshape(k, seq_len), flat[1:].reshape(k, seq_len)


def check_tokenizer(manifest: Mapping[str, Any], size: Size, *, name: str, data_dir: Path | None) -> int:
    """The dataset's vocabulary size, after checking it is the tokenizer the size's target was set with.

    A size without a ``tokenizer`` option (the ``lm`` workload's) takes whatever the dataset was prepared with.

    Raises:
      DataMissingError: another tokenizer, or (``min_train_tokens``) too few training tokens; the message gives
        the command that fixes it: ``optbench data prepare`` again, or, for a corpus too small to yield the
        size's vocabulary, the ``lm`` workload that trains on it as it is.
    """
    from optbench.data import prepare_command, shell_data_dir

    tok = manifest.get("tokenizer") or {}
    vocab = int(tok.get("vocab_size", 0))
    kind, want = size.options.get("tokenizer"), size.options.get("vocab")
    if kind and (tok.get("kind") != kind or vocab != int(want)):
        asked = (manifest.get("params") or {}).get("vocab_size")
        generic = f"{lm_command(size.name, name)} --data-dir {shell_data_dir(data_dir)}"
        if tok.get("kind") == kind == "bpe" and vocab < int(want) and isinstance(asked, int) and asked >= int(want):
            raise DataMissingError(
                f"size {size.name!r} of {name} was calibrated with {want} BPE ids but {name} yields only {vocab} "
                f"(too little text for more); train on it as it is, uncalibrated, with: {generic}")
        flags = "--tokenizer gpt2" if kind == "gpt2" else f"--tokenizer {kind} --vocab-size {want}"
        raise DataMissingError(
            f"size {size.name!r} of {name} was calibrated with the {kind} tokenizer ({want} ids) but {name} was "
            f"prepared with {tok.get('kind')!r} ({vocab} ids); re-prepare with: "
            f"{prepare_command(name, data_dir)} {flags} --force (or train uncalibrated: {generic})")
    have = int(manifest.get("splits", {}).get("train", {}).get("tokens", 0))
    need = size.options.get("min_train_tokens")
    if need and have < int(need):
        raise DataMissingError(
            f"size {size.name!r} of {name} needs {int(need):,} training tokens but only {have:,} are prepared; "
            f"re-prepare with: {prepare_command(name, data_dir)} --tokens {int(need)} --force")
    return vocab


def gpt_config(opts: Mapping[str, Any], vocab_size: int) -> GPTConfig:
    """The decoder of a size's options (the tiers' keys, and the ladder's architecture options where set)."""
    hidden = opts.get("mlp_hidden")
    return GPTConfig(
        vocab_size=vocab_size, seq_len=int(opts["seq_len"]), n_layer=int(opts["n_layer"]),
        n_head=int(opts["n_head"]), d_model=int(opts["d_model"]), norm=str(opts.get("norm", "rms")),
        pos=str(opts.get("pos", "rope")), mlp=str(opts.get("mlp", "gelu")),
        mlp_hidden=None if hidden is None else int(hidden), tie=bool(opts.get("tie", True)),
        bias=bool(opts.get("bias", False)),
    )


def gpt_roles(model: nn.Module) -> dict[str, Role]:
    """The :class:`~optbench.api.Role` of each GPT parameter, by name: the token embedding (the tied head too) and a
    learned position table are ``embedding``; an untied ``lm_head`` is ``head``; the blocks' matrices (qkv, attention
    proj, MLP fc/gate/proj) ``hidden``; norm gains and shifts and linear biases ``norm_bias``. A parameter this rule
    does not know is an error, not a guess."""
    out: dict[str, Role] = {}
    for name, p in named_params(model):
        if name.startswith(("embed.", "pos_embed.")):
            out[name] = Role.EMBEDDING
        elif name.startswith("lm_head."):
            out[name] = Role.HEAD
        elif p.dim() == 1:
            out[name] = Role.NORM_BIAS
        elif name.startswith("blocks.") and p.dim() == 2:
            out[name] = Role.HIDDEN
        else:
            raise ValueError(f"GPT parameter {name!r} {tuple(p.shape)} has no role")
    return out


class LMTask:
    """Next-token prediction at one size on one device."""

    def __init__(self, size: Size, device: torch.device, *, train: Any, val: Any, vocab_size: int) -> None:
        opts = size.options
        self.device = device
        self.cfg = gpt_config(opts, vocab_size)
        self.seq_len = self.cfg.seq_len
        self.autocast = bool(opts.get("autocast", False)) and device.type == "cuda"
        if self.autocast:
            check_fp32_head(device)  # decided here, off the clock and outside any compiled graph
        self.eval_batch_size = int(opts.get("eval_batch_size", 32))
        self.train = token_source(train, device, max_tokens=opts.get("max_train_tokens"))
        if len(self.train) < self.seq_len + 1:
            raise UsageError(f"the train split has {len(self.train)} tokens, fewer than one window of "
                             f"{self.seq_len + 1}")
        val_x, val_y = validation_windows(val, seq_len=self.seq_len, count=int(opts.get("val_sequences", 64)))
        self.val_x = torch.from_numpy(val_x).to(device)  # (K, T)
        self.val_y = torch.from_numpy(val_y).to(device)  # (K, T)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _autocast_loss(self, model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor, *,
                       reduction: str = "mean") -> torch.Tensor:
        with self._autocast():
            return model(tokens, targets, reduction=reduction)  # chunked over rows: no (B T, V) logits at once

    def init_model(self, generator: torch.Generator) -> nn.Module:
        return build_gpt(self.cfg, generator).to(self.device)

    def param_roles(self, model: nn.Module) -> dict[str, Role]:
        return gpt_roles(model)

    def next_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        window = self.train.draw(batch_size, self.seq_len + 1, generator)  # (B, T + 1)
        return TokenBatch(inputs=window[:, :-1], targets=window[:, 1:])

    def loss(self, model: nn.Module, batch: TokenBatch) -> torch.Tensor:
        return self._autocast_loss(model, batch.inputs, batch.targets)

    def sampled_loss(self, model: nn.Module, batch: TokenBatch, generator: torch.Generator) -> torch.Tensor:
        # Targets drawn from the model's own next-token distribution (Sophia's Gauss-Newton-Bartlett estimator),
        # chunk by chunk without gradients, then the chunked loss on them.
        with self._autocast():
            h = model.features(batch.inputs).flatten(0, 1)  # (B T, d)
            y = sample_targets(h, model.head_weight, generator)  # (B T,)
            return head_cross_entropy(h, model.head_weight, y)

    def evaluate(self, model: nn.Module) -> Mapping[str, float]:
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, len(self.val_x), self.eval_batch_size):
                x = self.val_x[start:start + self.eval_batch_size]
                y = self.val_y[start:start + self.eval_batch_size]
                total += self._autocast_loss(model, x, y, reduction="sum").double()
        val_loss = float(total) / self.val_y.numel()  # one sync at the end
        if not math.isfinite(val_loss):
            return {"val_loss": math.nan, "val_perplexity": math.nan}
        return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 700.0))}

    def flops_per_example(self) -> float:
        """Model FLOPs per training sequence (PaLM's formula: :func:`optbench_workloads._gpt.flops_per_sequence`)."""
        c = self.cfg
        return float(flops_per_sequence(n_layer=c.n_layer, d_model=c.d_model, seq_len=c.seq_len,
                                        vocab_size=c.vocab_size, mlp_ratio=c.mlp_ratio, mlp=c.mlp,
                                        mlp_hidden=c.mlp_hidden))

    def counts(self, batch: TokenBatch) -> tuple[int, int]:
        return int(batch.inputs.shape[0]), int(batch.inputs.numel())


class LanguageModel:
    """A language-modelling workload on one prepared corpus (``wikitext`` -> wikitext103, ``c4`` -> c4)."""

    metric = Metric(name="val_loss", goal=Goal.MIN)
    default_size = "tiny"  # the tier every machine can run; pick small or paper with --size on a GPU

    def __init__(self, *, name: str, dataset: str | None, sizes: Mapping[str, Size], description: str) -> None:
        self.name, self.dataset, self.description = name, dataset, description
        self.sizes: Mapping[str, Size] = sizes

    def flops_per_example(self, size: Size) -> float | None:
        """Model FLOPs per sequence at ``size`` (PaLM's formula), None when the vocabulary is the dataset's own."""
        o = size.options
        if "vocab" not in o:
            return None
        return float(flops_per_sequence(n_layer=int(o["n_layer"]), d_model=int(o["d_model"]),
                                        seq_len=int(o["seq_len"]), vocab_size=int(o["vocab"]),
                                        mlp=str(o.get("mlp", "gelu")), mlp_hidden=o.get("mlp_hidden")))

    # The model-size ladder (optbench_workloads.ladder): what --model, the record and the memory plan ask for.
    models = ladder.LADDER

    def with_model(self, size: Size, name: str) -> Size:
        """``size`` with the ladder rung ``name``'s model (``--model``), named ``TIER+NAME``."""
        return ladder.with_model(size, name)

    def model_config(self, size: Size) -> dict[str, Any]:
        """The model's shape, options and parameter counts, recorded on every result."""
        return ladder.model_config(size)

    def memory_profile(self, size: Size) -> Any:
        """Parameters and activation bytes per sequence at ``size`` (the device memory plan's input), counted at the
        tier's vocabulary, else GPT-2's (a generous stand-in for a dataset's own)."""
        vocab = ladder.model_vocab(size, ladder.GPT2_VOCAB)
        return ladder.memory_profile(size.options, vocab, autocast=bool(size.options.get("autocast", False)))

    def setup(self, size: Size, *, device: torch.device, data_dir: Path | None = None) -> LMTask:
        """Open the token files (DataMissingError if not prepared or prepared unlike the size needs)."""
        from optbench.data import load_tokens, read_manifest

        dataset = size.dataset or self.dataset
        if dataset is None:
            raise UsageError(f"size {size.name!r} of {self.name} names no dataset: use --size {size.name}@NAME with "
                             "NAME a prepared text dataset (optbench data list)")
        manifest = read_manifest(dataset, data_dir)
        vocab = check_tokenizer(manifest, size, name=dataset, data_dir=data_dir)
        return LMTask(size, device, train=load_tokens(dataset, "train", data_dir),
                      val=load_tokens(dataset, "val", data_dir), vocab_size=vocab)


wikitext = LanguageModel(
    name="wikitext", dataset="wikitext103", sizes=WIKITEXT_SIZES,
    description="WikiText-103 language modelling, GPT-style decoder; validation cross-entropy (nats/token)",
)
c4 = LanguageModel(
    name="c4", dataset="c4", sizes=C4_SIZES,
    description="C4 (English) language modelling, GPT-style decoder; validation cross-entropy (nats/token)",
)


# ---------------------------------------------------------------------------------------------- any text dataset

LM_WORKLOAD = "optbench_workloads.lm:lm"  # its spec until the entry point `lm` is registered (then: "lm")
CORPUS_SEP = "@"  # --size TIER@DATASET
UNCALIBRATED = "UNCALIBRATED"


def _generic_tier(size: Size) -> Size:
    """A wikitext tier without its tokenizer pin (the vocabulary comes from the dataset) and without a dataset."""
    options = {k: v for k, v in size.options.items() if k not in ("tokenizer", "vocab", "min_train_tokens")}
    return dataclasses.replace(size, options=options, dataset=None,
                               note=f"needs a dataset: --size {size.name}@NAME (NAME: any prepared text dataset)")


LM_TIERS = {name: _generic_tier(size) for name, size in WIKITEXT_SIZES.items()}


def corpus_size(tier: Size, dataset: str) -> Size:
    """``tier`` on ``dataset``, named ``TIER@DATASET`` so that its results stay apart from the calibrated tiers'.

    The model, batch, budget and evaluation are the tier's; the vocabulary is whatever the dataset's tokenizer has
    (read at set-up). The target is the BPE-8192 tier's on WikiText-103, not calibrated for this corpus, and the
    note says so: time to target compares submissions on this corpus, never against the calibrated tiers.
    """
    note = (f"{UNCALIBRATED} for {dataset}: the {tier.name} tier (model, batch, budget) with the dataset's own "
            f"vocabulary; the target {tier.target:g} nats/token is WikiText-103's at BPE-8192, never measured on "
            f"{dataset}: compare submissions by final val_loss, or set your own target")
    return dataclasses.replace(tier, name=f"{tier.name}{CORPUS_SEP}{dataset}", dataset=dataset, note=note)


class CorpusSizes(Mapping[str, Size]):
    """The ``lm`` workload's sizes: ``tiny`` and ``small`` are listed (and refuse to run without a dataset), and
    ``TIER@DATASET`` is that tier on any text dataset, catalog or user-supplied, built when asked for."""

    def __init__(self, tiers: Mapping[str, Size]) -> None:
        self._tiers = dict(tiers)

    def __getitem__(self, key: str) -> Size:
        from optbench.data import is_text_dataset_name

        tier, sep, dataset = str(key).partition(CORPUS_SEP)
        if tier not in self._tiers:
            raise KeyError(key)
        if not sep:
            return self._tiers[tier]
        if not is_text_dataset_name(dataset):  # cifar10, a path, an empty name...
            raise KeyError(key)
        return corpus_size(self._tiers[tier], dataset)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)


def lm_command(tier: str, dataset: str) -> str:
    """The command that trains the ``lm`` workload's ``tier`` on ``dataset`` (uncalibrated), as a user types it."""
    from optbench.plugins.registry import entry_points

    spec = "lm" if "lm" in entry_points("workloads") else LM_WORKLOAD
    return f"optbench run -w {spec} --size {tier.partition(CORPUS_SEP)[0]}{CORPUS_SEP}{dataset}"


lm = LanguageModel(
    name="lm", dataset=None, sizes=CorpusSizes(LM_TIERS),
    description="Language modelling on any prepared text dataset (--size tiny@NAME), GPT-style decoder with the "
                "dataset's vocabulary; targets uncalibrated",
)
