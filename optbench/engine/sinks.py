"""Live logging: a trial's curves written while it trains, through one small :class:`Sink` interface.

``--log jsonl``, ``--log tensorboard`` and ``--log wandb`` (repeatable) each add a sink. The sinks hang off the
runner's :class:`~optbench.engine.loop.Observer` calls, which are made at stretch ends and evaluations, off the
clock: a sink never adds a device synchronisation (every value it receives is already a Python number). The Parquet
result stays the record; a sink is only a window onto the trial. A sink that fails (its extra missing when the trial
starts, a write error later) warns once, in one line, and is dropped; the trial goes on unchanged.

Where the logs go, under the trial's results directory (``<run>`` is :func:`run_name`):

- ``jsonl``: ``<results>/.logs/<run>.jsonl``, one JSON object a line: ``{"kind": "stretch"|"eval", "step": N,
  ...values}`` (a value that is not finite is written as the string ``"nan"``/``"inf"``; a resumed trial appends).
- ``tensorboard``: ``<results>/.logs/tensorboard/<run>/`` (``tensorboard --logdir <results>/.logs/tensorboard``).
- ``wandb``: project ``optbench``, run name ``<run>``, files under ``<results>/.logs/wandb/``; offline
  (``mode="offline"``, no network needed; ``wandb sync`` uploads later) unless ``WANDB_MODE`` is set.

Logged values: ``train/loss`` and ``train/steps_per_second`` at stretch ends; at every evaluation ``eval/metric``
(the workload's metric), ``eval/<key>`` for every number in the evaluation's ``metrics_json``,
``train/loss_mean``, ``train/learning_rate``, ``throughput/examples_per_second`` (and tokens) over timed seconds,
``progress/examples`` and ``progress/timed_seconds``, and ``compute/model_flops`` (examples x the workload's
analytic model FLOPs per example) where the workload gives that count before training.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from optbench.errors import UsageError

if TYPE_CHECKING:
    from optbench.store.records import EvalRow

PreparedTrial = Any  # optbench.engine.prepared.PreparedTrial (not imported: prepared imports this module)

KINDS = ("jsonl", "tensorboard", "wandb")
EXTRA_MODULE = {"tensorboard": "tensorboard", "wandb": "wandb"}  # sink -> the module its extra installs
LOGS_DIR = ".logs"  # under the results directory: hidden, so that nothing reading results ever sees it


class Sink(Protocol):
    """Where live values go. ``scalars`` gets plain Python floats, never tensors."""

    def scalars(self, step: int, values: dict[str, float], *, kind: str) -> None: ...

    def close(self) -> None: ...


def check_extras(kinds: tuple[str, ...]) -> None:
    """Every requested sink's extra is installed, else one usage error naming the pip command (before training).

    Raises:
      UsageError: ``--log tensorboard needs tensorboard: pip install 'optbench[tensorboard]'``.
    """
    for kind in kinds:
        module = EXTRA_MODULE.get(kind)
        if module is None:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageError(f"--log {kind} needs {module}: pip install 'optbench[{kind}]'")


def _part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(name)).strip("._") or "_"


def run_name(prep: PreparedTrial) -> str:
    """``<workload>-<size>/<submission>/<study>-<trial>-seed<N>-<identity[:8]>``: one name per trial, the same in
    every sink and every process (each part made file-name safe)."""
    return "/".join((_part(f"{prep.workload.obj.name}-{prep.size.name}"), _part(prep.submission.label),
                     _part(f"{prep.study}-{prep.trial}-seed{prep.seed}-{prep.identity()[:8]}")))


# ------------------------------------------------------------------------------------------------------ sinks
class JsonlSink:
    """One JSON line per stretch end or evaluation, flushed at once (``tail -f`` shows the trial live)."""

    def __init__(self, path: Path, *, run: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._run = run

    def scalars(self, step: int, values: dict[str, float], *, kind: str) -> None:
        line = {"kind": kind, "step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """``torch.utils.tensorboard.SummaryWriter``: one event file per trial under ``.logs/tensorboard/<run>``."""

    def __init__(self, logdir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = logdir
        self._writer = SummaryWriter(log_dir=str(logdir))

    def scalars(self, step: int, values: dict[str, float], *, kind: str) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """A Weights & Biases run named after the trial, offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, directory: Path, *, run: str, config: dict[str, Any]) -> None:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"project": os.environ.get("WANDB_PROJECT", "optbench"), "name": run,
                                  "dir": str(directory), "config": config, "reinit": True}
        if not os.environ.get("WANDB_MODE"):
            kwargs["mode"] = "offline"
        if not os.environ.get("WANDB_SILENT") and hasattr(wandb, "Settings"):
            kwargs["settings"] = wandb.Settings(silent=True, console="off")  # the CLI's own lines stay readable
        self._run = wandb.init(**kwargs)

    def scalars(self, step: int, values: dict[str, float], *, kind: str) -> None:
        self._run.log(dict(values), step=step)

    def close(self) -> None:
        self._run.finish()


# ------------------------------------------------------------------------------------------------ observers
class SinkObserver:
    """An :class:`~optbench.engine.loop.Observer` feeding sinks. A sink that raises warns once and is dropped."""

    def __init__(self, sinks: list[tuple[str, Sink]], *, model_flops_per_example: float | None = None) -> None:
        self.sinks = list(sinks)
        self.flops_per_example = model_flops_per_example

    def _emit(self, step: int, values: dict[str, float], kind: str) -> None:
        for pair in list(self.sinks):
            name, sink = pair
            try:
                sink.scalars(step, values, kind=kind)
            except Exception as exc:  # a window onto the trial, never its end
                self._drop(pair, f"--log {name} stopped: {type(exc).__name__}: {exc}")

    def _drop(self, pair: tuple[str, Sink], message: str) -> None:
        if pair in self.sinks:
            self.sinks.remove(pair)
            warnings.warn(message.splitlines()[0] if message else message, RuntimeWarning, stacklevel=3)
            try:
                pair[1].close()
            except Exception:
                pass

    def started(self, *, max_steps: int | None, max_seconds: float | None) -> None:
        pass

    def stepped(self, *, step: int, loss: float, timed_seconds: float) -> None:
        values = {"train/loss": float(loss), "progress/timed_seconds": float(timed_seconds)}
        if timed_seconds > 0:
            values["train/steps_per_second"] = step / timed_seconds
        self._emit(step, values, "stretch")

    def evaluated(self, row: EvalRow, *, reached: bool) -> None:
        values: dict[str, float] = {"eval/metric": float(row.metric_value), "train/loss_mean": float(row.train_loss),
                                    "train/learning_rate": float(row.learning_rate),
                                    "progress/examples": float(row.examples),
                                    "progress/timed_seconds": float(row.timed_seconds),
                                    "eval/reached": float(bool(reached))}
        try:
            extra = json.loads(row.metrics_json) if row.metrics_json else {}
        except ValueError:
            extra = {}
        for key, value in (extra.items() if isinstance(extra, dict) else ()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[f"eval/{key}"] = float(value)
        if row.timed_seconds > 0:
            values["throughput/examples_per_second"] = row.examples / row.timed_seconds
            if row.tokens:
                values["throughput/tokens_per_second"] = row.tokens / row.timed_seconds
        if self.flops_per_example is not None:
            values["compute/model_flops"] = float(row.examples) * self.flops_per_example
        self._emit(row.step, values, "eval")

    def close(self) -> None:
        for pair in list(self.sinks):
            try:
                pair[1].close()
            except Exception as exc:
                warnings.warn(f"--log {pair[0]} did not close: {type(exc).__name__}: {exc}".splitlines()[0],
                              RuntimeWarning, stacklevel=2)
        self.sinks = []


class Observers:
    """Several observers as one (the progress bar and the sinks); each call goes to every one, in order."""

    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def started(self, *, max_steps: int | None, max_seconds: float | None) -> None:
        for o in self.observers:
            o.started(max_steps=max_steps, max_seconds=max_seconds)

    def stepped(self, *, step: int, loss: float, timed_seconds: float) -> None:
        for o in self.observers:
            o.stepped(step=step, loss=loss, timed_seconds=timed_seconds)

    def evaluated(self, row: EvalRow, *, reached: bool) -> None:
        for o in self.observers:
            o.evaluated(row, reached=reached)


def _flops_per_example(prep: PreparedTrial) -> float | None:
    """The workload's analytic model FLOPs per example for this size (None when it has none, or it fails)."""
    count = getattr(prep.workload.obj, "flops_per_example", None)
    if not callable(count):
        return None
    try:
        value = count(prep.size)
    except Exception:
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def _open(kind: str, prep: PreparedTrial, run: str) -> Sink:
    logs = Path(prep.results_dir) / LOGS_DIR
    if kind == "jsonl":
        return JsonlSink(logs / f"{run}.jsonl", run=run)
    if kind == "tensorboard":
        return TensorBoardSink(logs / "tensorboard" / run)
    if kind == "wandb":
        config = {"workload": prep.workload.obj.name, "size": prep.size.name, "submission": prep.submission.label,
                  "study": prep.study, "trial": prep.trial, "seed": prep.seed, "identity": prep.identity(),
                  "hparams": json.loads(prep.hparams_json)}
        return WandbSink(logs / "wandb", run=run, config=config)
    raise ValueError(f"unknown sink {kind!r}")


def make_sinks(prep: PreparedTrial) -> SinkObserver | None:
    """The observer writing the trial's ``--log`` sinks (None when it has none). A sink that cannot start (its
    extra gone, a folder it cannot write) warns once and is left out; the trial runs anyway."""
    kinds = tuple(getattr(prep, "log", ()) or ())
    if not kinds:
        return None
    run = run_name(prep)
    sinks: list[tuple[str, Sink]] = []
    for kind in dict.fromkeys(kinds):  # each sink once, in the order given
        try:
            sinks.append((kind, _open(kind, prep, run)))
        except Exception as exc:
            warnings.warn(f"--log {kind} not started: {type(exc).__name__}: {exc}".splitlines()[0], RuntimeWarning,
                          stacklevel=2)
    return SinkObserver(sinks, model_flops_per_example=_flops_per_example(prep)) if sinks else None
