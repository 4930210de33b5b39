"""What the results store holds: one :class:`TrialRecord` per trial and one :class:`EvalRow` per evaluation, the
vocabularies of their fields, and where a trial's file goes.

Layout: ``<results>/<workload>-<size>/<submission>/<run_id>.parquet``. Each file holds one row per evaluation
with the trial's metadata repeated on every row; see :mod:`optbench.store.writer` (how a file is written),
:mod:`optbench.store.checks` (how one is recognised and validated) and :mod:`optbench.store.reader` (how a results
directory is read). README, "Results", lists every field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# "interrupted": stopped by Ctrl-C; scored as not reached, and a re-run of the same tune runs the trial again.
OUTCOMES = ("reached", "missed", "diverged", "error", "oom", "timeout", "interrupted")
MATMUL_PRECISIONS = ("", "tf32", "fp32")  # TrialRecord.matmul_precision ("": a file from before the field)
# TrialRecord.stopped_by: the step budget or the seconds budget ended a trial that ran to its budget (a miss, or a
# full-budget recipe trial); "" when neither did (reached, diverged, error...) or in a file from before the field.
# A miss by seconds depends on the machine's speed and load; one by steps does not.
STOPPED_BY = ("", "steps", "seconds")
# TrialRecord.target_kind: what a trial's score rests on (optbench.engine.prepared.target_kind): the size's target
# as measured ("calibrated") or marked provisional ("provisional", every ladder model's), the user's --target
# ("user"), or the final metric of a full-budget trial ("budget"); "" in a file from before the field.
TARGET_KINDS = ("", "calibrated", "provisional", "user", "budget")
GOALS = ("min", "max")  # a metric's direction, as TrialRecord.metric_goal and optbench.api.Goal spell it

# What kind of study produced a trial (TrialRecord.study_kind). Runs, tunes and imported AlgoPerf logs are
# benchmark results, ranked against each other; the research recipes vary what a benchmark holds fixed (batch size,
# learning rate, model shape, ...) on purpose, so their trials are no entries of a leaderboard.
RANKED_KINDS = ("run", "tune", "algoperf")
RESEARCH_KINDS = ("cbs", "lr-sweep", "shape-search", "curvature", "seesaw", "scaling")
STUDY_KINDS = (*RANKED_KINDS, *RESEARCH_KINDS)


# The direction of a metric in one place (beside optbench.api.reached, which tests one value against a target).
def outcome_text(outcome: str, stopped_by: str = "") -> str:
    """An outcome as tables print it: a miss says which budget ended it (``missed (seconds)``: the machine's speed
    or load; ``missed (steps)``), every other outcome as recorded."""
    return f"{outcome} ({stopped_by})" if outcome == "missed" and stopped_by else outcome


def goal_sign(goal: str) -> float:
    """+1 for ``"min"``, -1 for ``"max"``: ``sign * metric`` is smaller for the better of two values."""
    if goal not in GOALS:
        raise ValueError(f"metric goal must be 'min' or 'max', got {goal!r}")
    return 1.0 if goal == "min" else -1.0


def better(a: float, b: float, goal: str) -> bool:
    """Whether metric value ``a`` is strictly better than ``b`` for a metric with direction ``goal``."""
    return goal_sign(goal) * a < goal_sign(goal) * b


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite: a field not recorded)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def best(values: Sequence[float], goal: str) -> float | None:
    """The best of the finite ``values`` in direction ``goal``; None when none is finite."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return min(finite) if goal_sign(goal) > 0 else max(finite)


def meets(values: Any, target: float, goal: str) -> Any:
    """Element-wise :func:`optbench.api.reached` on a numpy array: ``<=`` for min, ``>=`` for max; NaN never."""
    return values <= target if goal_sign(goal) > 0 else values >= target


@dataclass(frozen=True, kw_only=True)
class EvalRow:
    """One evaluation. Counts and seconds are totals since the start of the trial at the eval."""

    step: int
    examples: int
    tokens: int
    timed_seconds: float  # data loading + update steps (the scored clock)
    eval_seconds: float  # untimed evaluation so far
    wall_seconds: float  # everything, for the curious
    train_loss: float  # mean training loss over the steps since the previous eval
    metric_value: float  # the workload's metric (see TrialRecord.metric_name)
    learning_rate: float  # lr of the first parameter group at this step (NaN if none)
    batch_size: int
    metrics_json: str  # every metric the workload reported, as JSON


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """Everything about a trial but its curve. ``*_to_target`` are None when the target was missed."""

    schema_version: int
    run_id: str
    created_at: str  # UTC, ISO 8601
    workload: str
    size: str
    workload_origin: str  # "distribution==version" or the file and hash
    submission: str
    submission_origin: str
    hparams: str  # JSON, merged with defaults
    seed: int
    study: str
    trial: str
    outcome: str
    metric_name: str
    metric_goal: str  # "min" | "max"
    target: float
    time_to_target: float | None
    steps_to_target: int | None
    examples_to_target: int | None
    tokens_to_target: int | None
    best_metric: float | None
    total_steps: int
    total_timed_seconds: float
    max_steps: int | None
    max_seconds: float | None
    error: str | None  # traceback of an error / oom, reason of a divergence or timeout
    optbench_version: str
    code_hash: str
    git_commit: str
    torch_version: str
    python_version: str
    device: str
    device_name: str
    cpu_model: str
    compiled: bool = False  # the model ran under torch.compile
    micro_batch_size: int | None = None  # examples per forward/backward pass on one process (None: its whole share)
    accumulation_steps: int = 1  # passes per update on the busiest process at the configured batch size
    world_size: int = 1  # processes training the trial (torchrun ranks)
    dist_backend: str = ""  # "gloo" or "nccl" under torchrun, "" for one process
    device_names: str = ""  # every rank's device model, comma-separated in rank order
    sync_every: int = 1  # steps between reads of the training losses (the seconds budget may overshoot by this)
    resumes: int = 0  # times the trial was resumed from a checkpoint (schema 2)
    lost_seconds: float = 0.0  # timed seconds computed past the last checkpoint before each interruption (schema 2)
    step_hint: int | None = None  # the schedule's horizon in steps (--step-hint; schema 2)
    base_batch_size: int | None = None  # the configured global batch size; per-step batch sizes (Seesaw) start
    # from it and are in the eval rows' batch_size (None: a file from before this field)
    diagnostics: bool = False  # sharpness and noise scale measured at every evaluation (in metrics_json)
    study_kind: str = "run"  # what produced the trial: one of STUDY_KINDS ("run" for a file from before this field)
    varies: str = ""  # what that study varies across its trials, comma-separated ("batch_size,lr"); "" for a run
    deterministic: bool = False  # --deterministic: deterministic algorithms, cuBLAS workspace, math attention
    matmul_precision: str = ""  # fp32 matmuls in "tf32" (CUDA with TF32 on) or "fp32"; "" for a file from before
    compile_seconds: float | None = None  # seconds torch.compile spent compiling (None: not compiled, or older file)
    recompiles: int | None = None  # graphs compiled again for a shape or value the first did not cover (likewise)
    # FLOPs (optbench.engine.flops; None: not counted, or a file from before these fields)
    model_flops_per_example: float | None = None  # forward+backward FLOPs per training example (analytic or counted)
    optimizer_flops_per_step: float | None = None  # one optimizer step's FLOPs, periodic refreshes amortised
    flops_to_target: float | None = None  # model x examples + optimizer x steps to the target (None: missed)
    total_flops: float | None = None  # the same over the whole trial
    mfu: float | None = None  # model FLOPs per timed second / the GPU's dense bf16 peak (None: not a known GPU)
    optimizer_share: float | None = None  # the optimizer step's share of the timed seconds (None: not measured)
    # The conditions of the measurement (issue 21): "" / None in files from before these fields.
    stopped_by: str = ""  # which budget ended a trial that ran to its budget: one of STOPPED_BY
    # The machine's load over the trial (optbench.engine.load; None where it cannot be read)
    load_average: float | None = None  # mean 1-minute load average (runnable processes, this one included)
    cpu_count: int | None = None  # CPUs the process could run on
    cpu_share: float | None = None  # the trial thread's CPU time / the wall time: ~1 = it ran unhindered
    gpu_utilization: float | None = None  # mean % of time the GPU ran a kernel (NVML; None without it or on CPU)
    # What the submission asked of the harness (optbench.api.Capability values, sorted, comma-separated: "closure",
    # "create_graph", "eval_params"...); a plain class's are detected or declared (--create-graph). "" when none.
    capabilities: str = ""
    # The model (issue 23; "" in files from before these fields and for workloads that do not describe theirs)
    model_config: str = ""  # JSON: ladder name, layers/width/heads/MLP/norm/positions/head/vocab, parameter counts,
    # the token budget and its Chinchilla multiple, and the micro-batch's memory plan
    target_kind: str = ""  # what the score rests on: one of TARGET_KINDS


TRIAL_COLUMNS = tuple(f.name for f in fields(TrialRecord))
EVAL_COLUMNS = tuple(f.name for f in fields(EvalRow))


def _safe(name: str) -> str:
    """A file-system-safe version of a plugin name (specs may hold ':' and '/')."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("._") or "_"


def trial_dir(root: Path, *, workload: str, size: str, submission: str) -> Path:
    """The folder under ``root`` that holds the results of ``submission`` on ``workload``/``size``."""
    return Path(root) / f"{_safe(workload)}-{_safe(size)}" / _safe(submission)


def trial_path(root: Path, record: TrialRecord) -> Path:
    """Where ``record``'s file goes under ``root``."""
    return trial_dir(root, workload=record.workload, size=record.size, submission=record.submission) / (
        f"{record.run_id}.parquet")
