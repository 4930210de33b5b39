"""A trial, prepared: every value a user can give is resolved, bounded and validated here, once.

``optbench run``, ``optbench tune`` and the library's :func:`optbench.engine.runner.run_trial` all turn their inputs into a
:class:`PreparedTrial` with :func:`prepare`; the runner consumes it and re-parses nothing. Every bound lives in this
file, each with its one-line :class:`~optbench.errors.UsageError`, so that a value the store, torch or the clock
cannot hold (a seed of 2^63, a batch size of 1e30, a NaN budget, a study name that is not UTF-8) stops the command
before any training instead of failing after a trial has finished.

A trial travels to another process (a pool worker, a torchrun rank, a cluster task) as its plugin specs plus its
:class:`TrialConfig` in JSON (:meth:`TrialConfig.to_json`), and is prepared there again: the same values, the same
identity (:meth:`PreparedTrial.identity`), no pickled objects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from optbench.api import Budget, EvalPeriod, Size, Submission, TrialInfo, Workload
from optbench.errors import UsageError
from optbench.options import bounded_float, bounded_int, check, option
from optbench.store.fsutil import is_valid_text, printable
from optbench.store.records import STUDY_KINDS
from optbench.plugins.hparams import check_json, for_submission, merge
from optbench.plugins.plain import declared
from optbench.plugins.values import expectations
from optbench.plugins.registry import Loaded

# ----------------------------------------------------------------------------------------------------- bounds
# The store keeps integers as int64 and torch sizes are int64: nothing we record may exceed these.
MAX_SEED = 2**63 - 1
MAX_STEPS = 2**40  # about 10^12 update steps: far beyond any budget, small enough for every counter
MAX_BATCH = 2**31 - 1  # torch's index math and every data loader stay in range
MAX_SECONDS = 10.0**9  # about 31 years: larger is a typo, and float seconds stay exact enough below it
MAX_WARMUP_STEPS = 10**6
MAX_PLANNED_TRIALS = 100_000  # a tune plans at most this many trials (a billion studies would hang the planner)
MAX_BUDGET_MULTIPLIER = 1e6  # the self-tuning ruleset's budget factor (AlgoPerf uses 1.5 to 3)
MAX_TARGET = 1e300  # a validation target is a finite number (the store refuses inf)
MAX_NOISE_BATCHES = 100_000
MAX_ITERS = 10_000
MAX_NAME = 200  # characters of a study, trial or plugin name (they become file names and table cells)
DEFAULT_CHECKPOINT_EVERY = 600.0  # timed seconds between checkpoints of a long trial, unless given
LONG_TRIAL_SECONDS = 3600.0  # a budget of at least this many timed seconds checkpoints by default
SYNC_EVERY_GPU = 20  # steps between loss reads on a GPU: the launch queue never drains within a stretch
DEVICE_ENV = "OPTBENCH_DEVICE"  # the default --device (the test suite sets cpu: its trials run as on CI, GPU or not)


def text(value: Any, *, what: str) -> str:
    """A non-empty name that is valid UTF-8 and at most :data:`MAX_NAME` characters (it goes into the store).

    Raises:
      UsageError: naming ``what``.
    """
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{what} must be a non-empty name, got {value!r}")
    if not is_valid_text(value):
        raise UsageError(f"{what} is not valid UTF-8: {printable(value)!r}")
    if len(value) > MAX_NAME or any(ord(c) < 32 for c in value):
        raise UsageError(f"{what} must be at most {MAX_NAME} printable characters, got {value[:60]!r}...")
    return value


def trial_identity(*, workload: str, size: str, submission: str, study: str, trial: str, seed: int, hparams: str,
                   max_steps: int | None, max_seconds: float | None, target: float) -> str:
    """The digest naming a trial in claims, checkpoints, plans and the sweep engine's skip; computable from a
    result's record alike. The target is part of it: a sweep run again with another ``--target`` is another
    trial."""
    key = json.dumps([workload, size, submission, study, trial, seed, hparams, max_steps, max_seconds, target])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """How to run a trial, as given (unvalidated); every ``None`` means "the workload size's own setting".

    Attributes:
      size: size preset name (default: the workload's default size).
      model: a model size of the workload's ladder (``--model 360m``; :mod:`optbench_workloads.ladder` for the LM
        workloads): replaces the size's model and batch, keeps its data and evaluation; the size is then named
        ``SIZE+MODEL``, its budget is ``tokens`` (default ``1x``) and its micro-batch is planned to fit the device.
      tokens: the token budget, ``Nx`` (N times Chinchilla's 20 tokens per parameter, all parameters counted as in
        Hoffmann et al.; needs ``model``) or a count of tokens: max_steps = ceil(tokens / (batch x seq_len)), the step
        hint the same, no seconds budget unless ``max_seconds``; given with ``max_steps`` it is a usage error.
      hparams: hyperparameters given by the user (merged over the submission's defaults).
      seed: the trial's seed: model init, data order and any sampling derive from it.
      device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``.
      study, trial: identifiers for the tuning aggregation (best trial per study, median over studies).
      max_steps, max_seconds: budget overrides (timed seconds).
      eval_every_steps, eval_every_seconds: evaluation-period overrides.
      batch_size: batch-size override (a submission with BATCH_SCHEDULE still decides per step).
      timeout: wall-clock limit of the whole trial (set-up, warm-up and evaluation included), outcome ``timeout``.
      divergence_factor: a training loss above this multiple of the first step's loss is ``diverged``.
      warmup_steps: untimed steps run then undone before the clock starts (kernel caches, compilation).
      data_dir: where prepared datasets live.
      checkpoint: an explicit checkpoint file: the trial's state is saved there (at every evaluation, or every
        ``checkpoint_every`` timed seconds) and a trial started with an existing checkpoint resumes from it.
      checkpoint_every: save the trial's whole state every this many timed seconds (untimed, at the end of a
        stretch), under ``results/.checkpoints/`` unless ``checkpoint`` names a file.
      resume: continue from the trial's checkpoint under ``results/.checkpoints/`` if there is one.
      log: live-logging sinks (``jsonl``, ``tensorboard``, ``wandb``; :mod:`optbench.engine.sinks`), off the clock.
      diagnostics: at every evaluation (untimed), the training loss's top Hessian eigenvalue on a fixed batch beside
        2/lr, Adam-family preconditioned sharpness where the updater keeps its moments, and the gradient noise
        scale, into ``metrics_json`` (:mod:`optbench.engine.diagnostics`).
      step_hint: the schedule's horizon in steps (default: the size's ``step_hint``; give ``max_steps`` with a
        shortened budget so that the run still decays its learning rate instead of ending in its warm-up).
      compile: run the model's forward under ``torch.compile``, its batch dimension dynamic (one graph for every
        batch size). Compilation happens in the first steps and is timed (as in AlgoPerf), unless ``warmup_steps``
        take it off the clock; its seconds and recompilations are recorded.
      deterministic: deterministic algorithms, cuBLAS's fixed workspace and math attention
        (:class:`optbench.engine.backends.TrialSettings`): on CUDA, the same trial run twice, or interrupted and
        resumed, is then bit-identical (on the CPU it always is).
      tf32: fp32 matmuls and convolutions on CUDA in TensorFloat-32 (default: on, as AlgoPerf runs on its A100s)
        or in full fp32; recorded as ``matmul_precision``.
      micro_batch_size: examples per forward/backward pass on one process (default: the size's); the batch is
        accumulated over ceil(batch / processes / micro) passes with the same gradient.
      sync_every: read the training losses (divergence, progress) every this many steps; the only per-step-free
        synchronisation point (default: every step on CPU, where reading costs nothing; ``SYNC_EVERY_GPU`` on a
        GPU). A seconds budget may be overshot by up to this many steps.
      target: the validation target (default: the size's), recorded on the result.
      hvp_batch, noise_batches, iters: the diagnostics' sharpness batch, noise-scale batches and power-iteration
        steps (defaults: the training batch, 8, 30).
      full_budget: run the whole budget even once the target is reached (a recipe measuring dynamics or a final
        metric); the outcome is still ``reached`` when an evaluation met the target, and ``*_to_target`` the first.
      variant: a derived form of the submission a recipe runs (:mod:`optbench.plugins.variants`).
      study_kind, varies: what kind of study the trial belongs to (``run``, ``tune``, or a recipe) and which
        settings that study varies across its trials; recorded, so that ``score`` never pools a sweep with runs.

    Fields made with :func:`optbench.options.option` are the trial options of every command that runs trials: the
    command line is generated from them and :func:`prepare` checks their values against the same bounds.
    """

    size: str | None = option(None, "--size", "Size preset of the workload [default: the workload's default].",
                              kind="text")
    model: str | None = option(
        None, "--model", "A model size of the workload's ladder (LM workloads: t1-t4 on a CPU, 20m ... 1.2b; "
        "docs/WORKLOADS.md): replaces the size's model and batch, keeps its data; micro-batch planned to fit the "
        "device; the size's target is kept, provisional.", kind="text", metavar="NAME")
    tokens: str | None = option(
        None, "--tokens", "Token budget: Nx (N times Chinchilla's 20 tokens per parameter, all parameters) or a "
        "count; max_steps = ceil(tokens / (batch x seq_len)) [default with --model: 1x]; not with --max-steps.",
        kind="text", metavar="1x|4x|COUNT")
    hparams: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = option(os.environ.get(DEVICE_ENV) or "auto", "--device", "auto (CUDA where available, else CPU), "
                         "cpu, cuda or cuda:N [default: $OPTBENCH_DEVICE, else auto].", kind="text",
                         show_default=True)
    study: str | None = None
    trial: str = "0"
    data_dir: Path | None = option(None, "--data-dir", "Prepared datasets [default: ~/.cache/optbench or "
                                   "$OPTBENCH_DATA].", kind="dir")
    max_steps: int | None = option(None, "--max-steps", "Override the step budget.", kind="int", low=1,
                                   high=MAX_STEPS)
    max_seconds: float | None = option(None, "--max-seconds", "Override the budget of timed seconds.",
                                       kind="float", high=MAX_SECONDS)
    step_hint: int | None = option(
        None, "--step-hint", "Steps the learning-rate schedule spans [default: the size's step_hint; with a short "
        "--max-steps give the same value, or the run is mostly warm-up]; recorded on the result.", kind="int",
        low=1, high=MAX_STEPS)
    target: float | None = option(None, "--target", "Validation target [default: the size's own]; recorded on the "
                                  "result.", kind="float", low=-MAX_TARGET, high=MAX_TARGET, low_open=False)
    eval_every_steps: int | None = option(None, "--eval-every", "Evaluate every N steps (overrides the workload's "
                                          "period).", kind="int", low=1, high=MAX_STEPS)
    eval_every_seconds: float | None = None
    batch_size: int | None = option(None, "--batch-size", "Override the global batch size (over all processes, "
                                    "accumulation included).", kind="int", low=1, high=MAX_BATCH)
    micro_batch_size: int | None = option(
        None, "--micro-batch-size", "Examples per forward/backward pass on one process; the batch is accumulated "
        "over several passes with the same gradient [default: the size's, else one pass].", kind="int", low=1,
        high=MAX_BATCH)
    sync_every: int | None = option(
        None, "--sync-every", "Read the training losses every N steps, the only device synchronisation between "
        "evaluations [default: 1 on CPU, 20 on GPU]; a seconds budget may overshoot by N steps.", kind="int",
        low=1, high=MAX_STEPS)
    checkpoint_every: float | None = option(
        None, "--checkpoint-every", "Save the trial's whole state every SECONDS of timed work, untimed, under "
        "results/.checkpoints [default: every 600 s for budgets of an hour or more, else never].", kind="float",
        metavar="SECONDS")
    resume: bool = option(False, "--resume", "Continue each trial from its checkpoint under the results directory, "
                          "if it has one.", kind="flag")
    timeout: float | None = option(
        None, "--timeout", "Wall-clock limit per trial in seconds (set-up, warm-up and evaluation included; it "
        "interrupts a step that never returns); outcome 'timeout'.", kind="float")
    warmup_steps: int = option(0, "--warmup-steps", "Untimed steps run and undone before the clock starts (warms "
                               "caches / compilation).", kind="int", low=0, high=MAX_WARMUP_STEPS, show_default=True)
    compile: bool = option(False, "--compile", "Run the model under torch.compile (compilation is timed unless "
                           "--warmup-steps).", kind="flag")
    create_graph: bool = option(
        False, "--create-graph", "Backward with create_graph=True, for a plain optimizer class whose step "
        "differentiates the gradients (Hessian-vector products, as Adahessian) where optbench does not detect it; "
        "recorded in hparams and capabilities.", kind="flag")
    deterministic: bool = option(
        False, "--deterministic", "Deterministic algorithms (torch.use_deterministic_algorithms, cuBLAS's fixed "
        "workspace, math attention): a CUDA trial run twice or resumed is bit-identical (CPU trials always are); "
        "slower, and an operation without a deterministic kernel ends the trial as error. Recorded.", kind="flag")
    tf32: bool | None = option(
        None, "--tf32", "fp32 matmuls and convolutions on CUDA in TensorFloat-32 (--tf32) or full fp32 (--no-tf32) "
        "[default: TF32, as AlgoPerf runs on its A100s]; recorded as matmul_precision (CPU matmuls are always "
        "full fp32).", kind="switch")
    log: tuple[str, ...] = option(
        (), "--log", "Write the trial's curves live (repeatable): jsonl (results/.logs/<run>.jsonl), tensorboard "
        "(results/.logs/tensorboard; pip install 'optbench[tensorboard]') or wandb (offline unless WANDB_MODE; pip "
        "install 'optbench[wandb]'). The Parquet result stays the record.", kind="choice",
        choices=("jsonl", "tensorboard", "wandb"), multiple=True)
    diagnostics: bool = option(False, "--diagnostics", "At every evaluation (untimed): top Hessian eigenvalue beside "
                               "2/lr, preconditioned sharpness, gradient noise scale, into metrics_json.", kind="flag")
    hvp_batch: int | None = option(None, "--hvp-batch", "Diagnostics: examples of the fixed batch the sharpness is "
                                   "measured on [default: the training batch size].", kind="int", low=1,
                                   high=MAX_BATCH)
    noise_batches: int | None = option(None, "--noise-batches", "Diagnostics: batches per gradient-noise-scale "
                                       "estimate, 0 for none [default: 8; curvature: 0].", kind="int", low=0,
                                       high=MAX_NOISE_BATCHES)
    iters: int | None = option(None, "--iters", "Diagnostics: power-iteration steps per sharpness measurement "
                               "[default: 30; curvature: 20].", kind="int", low=1, high=MAX_ITERS)
    divergence_factor: float = 100.0
    checkpoint: Path | None = None
    full_budget: bool = option(
        False, "--full-budget", "Run the whole budget even once the target is reached: the trial is scored at its "
        "budget by its final metric (recorded as target_kind 'budget' unless --target is given); steps to the "
        "target are still its first reach.", kind="flag")
    variant: str | None = None
    study_kind: str = "run"
    varies: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (paths as text), for a job that prepares the trial in another process."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("data_dir", "checkpoint"):
            out[key] = None if out[key] is None else str(out[key])
        out["hparams"], out["varies"] = dict(self.hparams), list(self.varies)
        return out

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> TrialConfig:
        """The config :meth:`to_json` wrote."""
        out = dict(values)
        for key in ("data_dir", "checkpoint"):
            out[key] = None if out[key] is None else Path(out[key])
        out["varies"] = tuple(out["varies"])
        out["log"] = tuple(out.get("log") or ())
        return cls(**out)


# ---------------------------------------------------------------------------------------------- the prepared trial
@dataclass(frozen=True, kw_only=True)
class PreparedTrial:
    """One trial with every value resolved and validated; what the runner consumes.

    Attributes:
      workload, submission: the loaded plugins (with their origins).
      size: the size preset; budget, period: its budget and evaluation period after overrides.
      hparams: the submission's defaults merged with the given values (JSON-safe, checked).
      hparams_json: ``hparams`` as recorded (sorted JSON): part of the trial's identity.
      device: the resolved device name (``cpu``, ``cuda:0``...).
      info: what the submission is told (batch size, step hint, budget...).
      seed, study, trial: identity and randomness.
      timeout, warmup_steps, divergence_factor, compile, checkpoint, data_dir: as in :class:`TrialConfig`,
        validated.
      results_dir: where the result goes.
      deterministic, tf32: the torch settings the trial runs under (see :class:`TrialConfig`).
      micro_batch_size: examples per forward/backward pass on one process (None: the rank's whole share).
      world_size: processes training the trial together (torchrun's WORLD_SIZE; 1 without torchrun).
      sync_every: steps between reads of the training losses (see :class:`TrialConfig`).
      checkpoint_every: timed seconds between checkpoints (None: at every evaluation, when ``checkpoint`` is set).
      resume: load ``checkpoint`` when it exists (always for an explicit checkpoint file).
      log: the live-logging sinks, validated and their extras installed (see :class:`TrialConfig`).
      owns_checkpoint: the checkpoint is the harness's own (under the results directory): removed once the trial
        has ended with a result, kept when it was interrupted.
    """

    workload: Loaded[Workload]
    submission: Loaded[Submission]
    size: Size
    budget: Budget
    period: EvalPeriod
    hparams: Mapping[str, Any]
    hparams_json: str
    device: str
    info: TrialInfo
    seed: int
    study: str
    trial: str
    timeout: float | None
    warmup_steps: int
    divergence_factor: float
    compile: bool
    checkpoint: Path | None
    data_dir: Path | None
    results_dir: Path
    micro_batch_size: int | None = None
    world_size: int = 1
    sync_every: int = 1
    checkpoint_every: float | None = None
    resume: bool = False
    owns_checkpoint: bool = False
    diagnostics: bool = False
    hvp_batch: int | None = None
    noise_batches: int = 8
    iters: int = 30
    full_budget: bool = False
    study_kind: str = "run"
    varies: tuple[str, ...] = ()
    deterministic: bool = False
    tf32: bool = True
    log: tuple[str, ...] = ()
    model: str | None = None  # the ladder's model size (--model), None for the size's own model
    tokens: int | None = None  # the token budget (--tokens, or 1x for a --model trial), None for none
    model_config: str = ""  # JSON: the model's shape, options, parameter counts and micro-batch plan ("": no model)
    target_kind: str = ""  # what the score rests on: one of TARGET_KINDS

    @property
    def batch_size(self) -> int:
        return self.info.batch_size

    @property
    def target(self) -> float:
        return self.size.target

    @property
    def title(self) -> str:
        return f"{self.workload.obj.name}/{self.size.name} {self.submission.label} seed {self.seed}"

    def identity(self) -> str:
        """A digest of what identifies the trial in a tune (plugins, size, study, trial, seed, hparams, budget)."""
        return trial_identity(workload=self.workload.obj.name, size=self.size.name, submission=self.submission.label,
                              study=self.study, trial=self.trial, seed=self.seed, hparams=self.hparams_json,
                              max_steps=self.budget.max_steps, max_seconds=self.budget.max_seconds,
                              target=self.size.target)

    def checkpoint_key(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the trial (not its budget: a budget may be extended), the
        versions of the code that wrote it (the engine's release and both plugins' distributions), where it ran
        (the device type and the number of devices: a state saved on CUDA holds CUDA generators, and a trial's
        batches split over its ranks) and the torch settings that make it reproducible. Not the source hash: an
        edit of the report code must not strand a day of training."""
        import optbench

        from optbench.engine.backends import matmul_precision

        return {"workload": self.workload.obj.name, "size": self.size.name, "submission": self.submission.label,
                "workload_origin": f"{self.workload.origin.distribution}=={self.workload.origin.version}",
                "submission_origin": f"{self.submission.origin.distribution}=={self.submission.origin.version}",
                "hparams": self.hparams_json, "seed": self.seed, "study": self.study, "trial": self.trial,
                "optbench": optbench.__version__, "device_type": self.device.split(":")[0],
                "device_count": self.world_size, "deterministic": self.deterministic,
                "matmul_precision": matmul_precision(self.device, self.tf32)}


def resolve_size(workload: Workload, name: str | None) -> Size:
    """The size preset called ``name`` (default: the workload's default), else a usage error listing the sizes."""
    name = name or workload.default_size
    if name not in workload.sizes:
        raise UsageError(f"workload {workload.name!r} has no size {name!r}; sizes: {', '.join(workload.sizes)}")
    return workload.sizes[name]


def resolve_device(name: str, *, local_rank: int = 0) -> str:
    """``auto`` -> ``cuda`` if available else ``cpu``; an unknown or unavailable device is a usage error. Under
    torchrun, a bare ``cuda`` (or ``auto`` on a GPU machine) is this process's GPU, ``cuda:LOCAL_RANK``."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank:
        name = f"cuda:{local_rank}"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    return str(dev)


def budget_for(size: Size, *, max_steps: Any = None, max_seconds: Any = None) -> Budget:
    """The size's budget with the given overrides (``None``: the size's own), bounded."""
    steps = size.budget.max_steps if max_steps is None else check(TrialConfig, "max_steps", max_steps)
    seconds = size.budget.max_seconds if max_seconds is None else check(TrialConfig, "max_seconds", max_seconds)
    return Budget(max_steps=steps, max_seconds=seconds)


def _period(size: Size, cfg: TrialConfig) -> EvalPeriod:
    if cfg.eval_every_steps is None and cfg.eval_every_seconds is None:
        return size.eval_every
    steps = check(TrialConfig, "eval_every_steps", cfg.eval_every_steps)
    seconds = None if cfg.eval_every_seconds is None else bounded_float(
        cfg.eval_every_seconds, what="the evaluation period in seconds")
    return EvalPeriod(steps=steps, seconds=seconds)


def _batch_size(cfg: TrialConfig, hparams: Mapping[str, Any], size: Size) -> int:
    if cfg.batch_size is not None:
        return check(TrialConfig, "batch_size", cfg.batch_size)
    if hparams.get("batch_size") is not None:
        return bounded_int(hparams["batch_size"], what="hyperparameter batch_size", low=1, high=MAX_BATCH)
    return size.batch_size


def _sized(size: Size, cfg: TrialConfig) -> Size:
    """The size preset with the trial's own target (``--target``), recorded on its result."""
    if cfg.target is None:
        return size
    return replace(size, target=check(TrialConfig, "target", cfg.target))


# ------------------------------------------------------------------------------- model ladder and token budget
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: compute-optimal tokens per parameter (all parameters)
MAX_TOKENS = MAX_STEPS * 2**20  # far above any corpus; keeps steps and the store's int64 in range


def _modelled(w: Workload, size: Size, cfg: TrialConfig) -> Size:
    """The size with the ladder model ``--model`` (the workload's ``with_model``), else as it is."""
    if cfg.model is None:
        return size
    name = text(cfg.model, what="--model")
    if not callable(getattr(w, "with_model", None)):
        raise UsageError(f"workload {w.name!r} has no model ladder; --model is for the language-model workloads")
    return w.with_model(size, name)


def parse_tokens(value: str, size: Size) -> int:
    """``--tokens``: ``Nx`` times Chinchilla's tokens for the size's model (all its parameters), or a count.

    Raises:
      UsageError: not a multiple or a count, out of bounds, or a multiple for a size without a parameter count.
    """
    given = str(value).strip().lower()
    try:
        number = float(given[:-1] if given.endswith("x") else given.replace("_", ""))
    except ValueError:
        raise UsageError(f"--tokens must be a Chinchilla multiple such as 1x or 0.5x, or a token count; got "
                         f"{value!r}") from None
    if given.endswith("x"):
        params = size.options.get("params_total")
        if params is None:
            raise UsageError(f"--tokens {value} is a Chinchilla multiple; it needs --model (a size with a parameter "
                             "count), or give a token count")
        number *= CHINCHILLA_TOKENS_PER_PARAM * int(params)
    if not 1 <= number <= MAX_TOKENS:  # NaN fails too; the message shows what was typed, not a 300-digit number
        raise UsageError(f"--tokens must come to between 1 and {MAX_TOKENS} tokens, got {printable(str(value))[:40]!r}")
    return round(number)


def _token_budget(size: Size, cfg: TrialConfig, batch_size: int) -> tuple[Size, int | None]:
    """The size with the trial's token budget as its budget and step hint (see :class:`TrialConfig`), and that
    many tokens; the size as it is when neither ``--tokens`` nor ``--model`` is given."""
    if cfg.tokens is None and cfg.model is None:
        return size, None
    if cfg.tokens is not None and cfg.max_steps is not None:
        raise UsageError("--tokens and --max-steps both set the step budget; give one of them")
    if "seq_len" not in size.options:
        raise UsageError(f"--tokens needs a sequence model; size {size.name!r} has no seq_len")
    seq_len = int(size.options["seq_len"])
    tokens = None
    if cfg.max_steps is not None:
        steps = check(TrialConfig, "max_steps", cfg.max_steps)
    else:
        tokens = parse_tokens("1x" if cfg.tokens is None else cfg.tokens, size)  # "" is a mistake, not 1x
        steps = -(-tokens // (batch_size * seq_len))
        if steps > MAX_STEPS:
            raise UsageError(f"--tokens {cfg.tokens} is {steps} steps at {batch_size} x {seq_len} tokens, more than "
                             f"{MAX_STEPS}")
    return replace(size, budget=Budget(max_steps=steps), step_hint=steps), tokens


def target_kind(size: Size, cfg: TrialConfig) -> str:
    """What the trial's score rests on, one of :data:`optbench.store.records.TARGET_KINDS`: a full-budget trial
    without ``--target`` is scored by its final metric (``budget``); ``--target`` is the user's; a ladder model's, or
    a size whose note says provisional or uncalibrated, is ``provisional``; else ``calibrated``."""
    if cfg.full_budget and cfg.target is None:
        return "budget"
    if cfg.target is not None:
        return "user"
    note = size.note.lower()
    return "provisional" if cfg.model or "provisional" in note or "uncalibrated" in note else "calibrated"


def device_memory(device: str) -> int | None:
    """Bytes of memory of ``device`` a trial may plan with: a CUDA device's total (not its free memory: a process
    that ran an earlier trial still caches blocks, and every trial of a study must plan alike); None on the CPU and
    MPS, whose memory is the host's and is assumed sufficient (the tiny ladder's models are a few MB), so that CPU
    runs are never shrunk. Tests replace this function to plan against a fake capacity."""
    if not device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


def _micro_plan(w: Workload, size: Size, cfg: TrialConfig, *, optimizer: str, hparams: Mapping[str, Any],
                device: str, share: int) -> tuple[int | None, dict[str, Any] | None]:
    """The micro-batch of a ``--model`` trial without ``--micro-batch-size``, planned to fit the device's memory
    (:mod:`optbench.plugins.memory`), and what it was planned with; (None, None) when nothing is planned."""
    from optbench.plugins import memory

    capacity = device_memory(device)
    if cfg.model is None or capacity is None or not callable(getattr(w, "memory_profile", None)):
        return None, None
    profile = w.memory_profile(size)
    try:
        plan = memory.plan_micro_batch(profile, optimizer=optimizer, share=share, capacity=capacity,
                                       max_precond_dim=int(hparams.get("max_precond_dim", memory.MAX_PRECOND_DIM)))
    except memory.DoesNotFit as exc:
        raise UsageError(f"--model {cfg.model} does not fit {device}: {exc}; use a smaller --model") from None
    return plan.micro_batch_size, {"capacity_bytes": capacity, "usable_bytes": plan.usable_bytes,
                                   "fixed_bytes": plan.fixed_bytes, "peak_bytes": plan.peak_bytes,
                                   "margin": memory.MARGIN, "reserve_bytes": memory.RESERVE_BYTES}


def _model_config(w: Workload, size: Size, tokens: int | None, plan: dict[str, Any] | None) -> str:
    """The record's ``model_config``: the workload's description of the model, the token budget and the plan."""
    describe = getattr(w, "model_config", None)
    if not callable(describe):
        return ""
    out = dict(describe(size))
    total = out.get("params_total")
    out["tokens"] = tokens
    out["chinchilla_multiple"] = (tokens / (CHINCHILLA_TOKENS_PER_PARAM * total)) if tokens and total else None
    out["memory_plan"] = plan
    return json.dumps(out, sort_keys=True)


def _extras(cfg: TrialConfig) -> dict[str, Any]:
    """The diagnostics settings and the study's description, validated."""
    kinds = [k for k in STUDY_KINDS if k != "algoperf"]  # imported logs are never prepared here
    if cfg.study_kind not in kinds:
        raise UsageError(f"unknown study kind {cfg.study_kind!r}; kinds: {', '.join(kinds)}")
    kind = cfg.study_kind
    noise = check(TrialConfig, "noise_batches", cfg.noise_batches)
    if noise == 1:
        raise UsageError("--noise-batches must be 0 (off) or at least 2 (a variance needs two batches)")
    return {"diagnostics": bool(cfg.diagnostics), "hvp_batch": check(TrialConfig, "hvp_batch", cfg.hvp_batch),
            "noise_batches": 8 if noise is None else noise,
            "iters": 30 if cfg.iters is None else check(TrialConfig, "iters", cfg.iters),
            "full_budget": bool(cfg.full_budget), "study_kind": kind,
            "varies": tuple(text(v, what="a varied setting") for v in cfg.varies)}


def _log(cfg: TrialConfig) -> tuple[str, ...]:
    """``--log`` sinks, each once, in the order given; a sink whose extra is not installed is a usage error now,
    before any training (:func:`optbench.engine.sinks.check_extras`)."""
    from optbench.engine.sinks import check_extras

    kinds = tuple(dict.fromkeys(check(TrialConfig, "log", tuple(cfg.log or ())) or ()))
    check_extras(kinds)
    return kinds


def _torch_settings(cfg: TrialConfig) -> dict[str, Any]:
    """``--deterministic`` and ``--tf32``, validated (TF32 on unless ``--no-tf32``)."""
    tf32 = check(TrialConfig, "tf32", cfg.tf32)
    return {"deterministic": check(TrialConfig, "deterministic", cfg.deterministic),
            "tf32": True if tf32 is None else tf32}


def prepare(workload: Loaded[Workload], submission: Loaded[Submission], cfg: TrialConfig, *,
            results_dir: Path) -> PreparedTrial:
    """Resolve and validate everything about one trial.

    Args:
      workload: the loaded workload plugin.
      submission: the loaded submission plugin.
      cfg: the trial's settings as given.
      results_dir: where its result will be written.
    Returns:
      The :class:`PreparedTrial`.
    Raises:
      UsageError: any value out of its bounds, an unknown size, hyperparameter or device, a name that is not
        UTF-8; one line naming the value.
    """
    w, s = workload.obj, submission.obj
    text(workload.name, what="workload name")
    text(submission.name, what="submission name")
    size = _sized(_modelled(w, resolve_size(w, cfg.size), cfg), cfg)
    seed = bounded_int(cfg.seed, what="--seed", low=0, high=MAX_SEED)
    study = text(cfg.study, what="--study") if cfg.study is not None else f"seed{seed}"
    trial = text(cfg.trial, what="trial id")
    check_json(cfg.hparams, where="hyperparameters")
    given = for_submission(cfg.hparams, {submission.name, submission.label, getattr(s, "name", submission.name)})
    hparams = merge(s.defaults, given, submission=submission.name, expects=expectations(s))
    check_groups = getattr(getattr(s, "factory", None), "check_hparams", None)
    if check_groups is not None:  # a plain class's groups by role (optbench.plugins.groups): refused before set-up
        check_groups(hparams)
    submission, hparams = declared(submission, hparams, create_graph=bool(cfg.create_graph))
    hparams_json = json.dumps(dict(hparams), sort_keys=True, default=str)
    from optbench.parallel.distributed import world

    here = world()
    device = resolve_device(cfg.device, local_rank=here.local_rank)
    size, tokens = _token_budget(size, cfg, _batch_size(cfg, hparams, size))
    budget = budget_for(size, max_steps=cfg.max_steps, max_seconds=cfg.max_seconds)
    hint = schedule_horizon(size, budget, cfg.step_hint)
    if "schedule" in hparams:  # a bad schedule value is one line now, not an error outcome after set-up
        from optbench.schedules import from_hparams

        from_hparams(hparams, total_steps=hint)
    period = _period(size, cfg)
    batch_size = _batch_size(cfg, hparams, size)
    if batch_size < here.size:
        raise UsageError(f"batch size {batch_size} is smaller than the {here.size} processes sharing it")
    micro = cfg.micro_batch_size if cfg.micro_batch_size is not None else size.micro_batch_size
    micro = check(TrialConfig, "micro_batch_size", micro)
    plan = None
    if micro is None:
        micro, plan = _micro_plan(w, size, cfg, optimizer=submission.name, hparams=hparams, device=device,
                                  share=-(-batch_size // here.size))
    sync_every = default_sync_every(device) if cfg.sync_every is None else check(TrialConfig, "sync_every",
                                                                                  cfg.sync_every)
    timeout = check(TrialConfig, "timeout", cfg.timeout)
    warmup = check(TrialConfig, "warmup_steps", cfg.warmup_steps)
    factor = bounded_float(cfg.divergence_factor, what="divergence factor", low=1.0, high=1e300)
    info = TrialInfo(workload=w.name, size=size.name, step_hint=hint, max_steps=budget.max_steps,
                     batch_size=batch_size, device=device, seed=seed)
    every = check(TrialConfig, "checkpoint_every", cfg.checkpoint_every)
    if every is None and (budget.max_seconds or 0.0) >= LONG_TRIAL_SECONDS:
        every = DEFAULT_CHECKPOINT_EVERY  # long tiers survive a kill by default
    prep = PreparedTrial(
        workload=workload, submission=submission, size=size, budget=budget, period=period, hparams=hparams,
        hparams_json=hparams_json, device=device, info=info, seed=seed, study=study, trial=trial, timeout=timeout,
        warmup_steps=warmup, divergence_factor=factor, compile=bool(cfg.compile), checkpoint=cfg.checkpoint,
        data_dir=cfg.data_dir, results_dir=Path(results_dir), micro_batch_size=micro, world_size=here.size,
        sync_every=sync_every, checkpoint_every=every, resume=bool(cfg.resume) or cfg.checkpoint is not None,
        **_extras(cfg), **_torch_settings(cfg), log=_log(cfg), model=cfg.model, tokens=tokens,
        model_config=_model_config(w, size, tokens, plan), target_kind=target_kind(size, cfg),
    )
    if cfg.checkpoint is None and (every is not None or cfg.resume):
        prep = replace(prep, checkpoint=checkpoint_path(Path(results_dir), prep.identity()), owns_checkpoint=True)
    return prep


def schedule_horizon(size: Size, budget: Budget, given: Any) -> int:
    """The steps a schedule spans: ``given`` (``--step-hint``), else the size's step_hint (AlgoPerf's rule: a budget
    override does not move the schedule, so a trial extended later keeps its schedule)."""
    if given is not None:
        return check(TrialConfig, "step_hint", given)
    return size.step_hint


def default_sync_every(device: str) -> int:
    """Steps between loss reads on ``device``: every step on the CPU (reading costs nothing), else a stretch."""
    return 1 if device == "cpu" else SYNC_EVERY_GPU


def on_this_machine(prep: PreparedTrial, device_spec: str) -> PreparedTrial:
    """``prep`` with its device resolved again from ``device_spec`` here (a cluster task prepared on a login node
    without GPUs), and the world of this process; the loss-read interval follows the device unless it was set."""
    from dataclasses import replace

    from optbench.parallel.distributed import world

    here = world()
    device = resolve_device(device_spec, local_rank=here.local_rank)
    if device == prep.device and here.size == prep.world_size:
        return prep
    sync = default_sync_every(device) if prep.sync_every == default_sync_every(prep.device) else prep.sync_every
    return replace(prep, device=device, info=replace(prep.info, device=device), world_size=here.size,
                   sync_every=sync)


def checkpoint_path(results_dir: Path, identity: str) -> Path:
    """Where the harness keeps the checkpoint of the trial with ``identity`` (a dot-folder readers skip)."""
    return Path(results_dir) / ".checkpoints" / f"{identity}.pt"


def check_data(size: Size, data_dir: Path | None) -> None:
    """Stop before any trial when ``size`` needs a dataset that is not prepared (the message gives the command)."""
    if size.dataset:
        from optbench.store import paths
        from optbench.data import read_manifest

        read_manifest(size.dataset, paths.data_dir(data_dir))


def check_destination(results_dir: Path, trials: Sequence[PreparedTrial] = ()) -> None:
    """Prove the results directory, and the folder each of ``trials`` writes to, writable before any trial trains
    (one line naming the path otherwise: a folder blocked by a file below a writable root fails here, not after
    training), and clear the temporaries that killed writers left there."""
    from optbench.store.fsutil import clean_stale_temporaries, ensure_writable_dir
    from optbench.store.records import trial_dir

    clean_stale_temporaries(ensure_writable_dir(Path(results_dir)))
    folders = {trial_dir(results_dir, workload=t.workload.obj.name, size=t.size.name, submission=t.submission.label)
               for t in trials}
    # A trial that will save checkpoints must be able to: found here, not at its first save mid-training.
    folders |= {t.checkpoint.parent for t in trials if t.checkpoint is not None and t.checkpoint_every is not None}
    for folder in sorted(folders):
        ensure_writable_dir(folder)
