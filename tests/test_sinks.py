"""Live logging (``--log jsonl|tensorboard|wandb``, :mod:`optbench.engine.sinks`).

TensorBoard and W&B are exercised for real: both are in the ``test`` extra. The event files are read back with
TensorBoard's own reader; W&B runs offline (no network) and its run file is searched for the logged keys (the
installed wandb ships no reader for its ``.wandb`` files). One test uses a fake ``wandb`` module, only to check the
offline/``WANDB_MODE`` choice without starting W&B's service.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine import sinks as sinks_mod
from optbench.engine.prepared import TrialConfig
from optbench.sweep.engine import Planned, run_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"device": "cpu", "max_steps": 40, "eval_every_steps": 20, "hparams": {"schedule": "constant"}}


def _plan(log: tuple[str, ...], n: int = 1) -> list[Planned]:
    return [Planned(workload="linreg", submission="sgd",
                    config=TrialConfig(seed=i, trial=f"t{i}", study="live", log=log, **FAST)) for i in range(n)]


def _logs(results: Path, pattern: str) -> list[Path]:
    return sorted((results / sinks_mod.LOGS_DIR).rglob(pattern))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_has_a_line_per_stretch_and_evaluation(results):
    out = run_plan(_plan(("jsonl",)), results_dir=results)
    (o,) = out.outcomes
    (path,) = _logs(results, "*.jsonl")
    run = sinks_mod.run_name(o.prep)
    assert path == results / ".logs" / f"{run}.jsonl"
    assert run.startswith("linreg-tiny/sgd/live-t0-seed0-") and run.endswith(o.prep.identity()[:8])
    lines = _lines(path)
    evals = [x for x in lines if x["kind"] == "eval"]
    stretches = [x for x in lines if x["kind"] == "stretch"]
    _, rows = o.read()
    assert [x["step"] for x in evals] == list(rows["step"]) == [0, 20, 40]
    assert [x["step"] for x in stretches] == list(range(1, 41))  # on CPU every step ends a stretch
    assert all(a["step"] <= b["step"] for a, b in zip(lines, lines[1:]))  # monotone
    for x in stretches:
        assert {"train/loss", "train/steps_per_second", "progress/timed_seconds"} <= set(x)
    for x, (_, row) in zip(evals, rows.iterrows()):
        assert x["eval/metric"] == pytest.approx(row["metric_value"])
        assert x["train/learning_rate"] == pytest.approx(row["learning_rate"])
        assert x["progress/examples"] == row["examples"]
        for key in json.loads(row["metrics_json"]):
            assert f"eval/{key}" in x
    last = evals[-1]
    assert last["throughput/examples_per_second"] == pytest.approx(last["progress/examples"]
                                                                   / last["progress/timed_seconds"])
    assert last["compute/model_flops"] > 0  # linreg counts its FLOPs per example analytically


def test_tensorboard_event_files_read_back_with_tensorboards_reader(results):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run_plan(_plan(("tensorboard",)), results_dir=results)
    (o,) = out.outcomes
    logdir = results / ".logs" / "tensorboard" / sinks_mod.run_name(o.prep)
    assert list(logdir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "eval/metric", "train/learning_rate", "throughput/examples_per_second",
            "compute/model_flops"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 41))
    assert [e.step for e in acc.Scalars("eval/metric")] == [0, 20, 40]
    _, rows = o.read()
    assert [e.value for e in acc.Scalars("eval/metric")] == pytest.approx(list(rows["metric_value"]), rel=1e-6)


def test_wandb_offline_run_holds_the_logged_keys(results, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    run_plan(_plan(("wandb",)), results_dir=results)
    (runfile,) = _logs(results, "offline-run-*/*.wandb")  # offline: nothing sent anywhere
    data = runfile.read_bytes()
    for key in ("train/loss", "eval/metric", "train/learning_rate", "throughput/examples_per_second",
                "compute/model_flops"):
        assert key.encode() in data, key


def test_wandb_is_offline_unless_wandb_mode_is_set(tmp_path, monkeypatch):
    """A fake ``wandb`` module in sys.modules: what the sink asks of wandb.init, without W&B's service."""
    calls: list[dict] = []

    class FakeRun:
        def __init__(self) -> None:
            self.logged: list[tuple[dict, int]] = []

        def log(self, values, step):
            self.logged.append((values, step))

        def finish(self):
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(kw) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sink = sinks_mod.WandbSink(tmp_path, run="a/b/c", config={})
    sink.scalars(3, {"train/loss": 1.5}, kind="stretch")
    assert calls[-1]["mode"] == "offline" and calls[-1]["name"] == "a/b/c"
    assert sink._run.logged == [({"train/loss": 1.5}, 3)]
    monkeypatch.setenv("WANDB_MODE", "online")
    sinks_mod.WandbSink(tmp_path, run="x", config={})
    assert "mode" not in calls[-1]  # the user's WANDB_MODE decides


class Raising:
    def __init__(self) -> None:
        self.calls = 0

    def scalars(self, step, values, *, kind):
        self.calls += 1
        raise OSError("disk full\nsecond line")

    def close(self):
        raise OSError("still full")


def _curve(outcome):
    rec, rows = outcome.read()
    cols = ["step", "examples", "tokens", "train_loss", "metric_value", "learning_rate", "batch_size", "metrics_json"]
    return rec["outcome"], rows[cols].reset_index(drop=True)


def test_a_raising_sink_warns_once_and_leaves_the_trial_unchanged(tmp_path, monkeypatch):
    plain = run_plan(_plan(()), results_dir=tmp_path / "plain").outcomes[0]
    sink = Raising()
    real_open = sinks_mod._open
    monkeypatch.setattr(sinks_mod, "_open", lambda kind, prep, run: sink if kind == "jsonl" else
                        real_open(kind, prep, run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = run_plan(_plan(("jsonl", "tensorboard")), results_dir=tmp_path / "logged").outcomes[0]
    ours = [w for w in caught if "--log" in str(w.message)]
    assert len(ours) == 1 and "--log jsonl stopped: OSError: disk full" == str(ours[0].message)
    assert sink.calls == 1  # dropped after its first failure
    (outcome, curve), (plain_outcome, plain_curve) = _curve(logged), _curve(plain)
    assert outcome == plain_outcome and curve.equals(plain_curve)  # bit-identical outcome and curve (timings aside)
    assert list((tmp_path / "logged" / ".logs" / "tensorboard").rglob("events.out.tfevents.*"))  # the other goes on


def test_a_sink_that_cannot_start_warns_and_the_trial_runs(tmp_path, monkeypatch):
    def broken(kind, prep, run):
        raise ImportError("No module named 'tensorboard'")

    monkeypatch.setattr(sinks_mod, "_open", broken)
    with pytest.warns(RuntimeWarning, match=r"--log tensorboard not started"):
        out = run_plan(_plan(("tensorboard",)), results_dir=tmp_path / "r").outcomes[0]
    assert out.status == "ran" and out.read()[0]["outcome"] in ("reached", "missed")


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_a_missing_extra_is_one_usage_line_before_training(tmp_path, monkeypatch, kind):
    monkeypatch.setitem(sys.modules, kind, None)  # the import fails, as without the extra
    root = tmp_path / "results"
    r = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "sgd", "--max-steps", "5", "--device", "cpu",
                                  "--log", "jsonl", "--log", kind, "--results-dir", str(root)])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines == [f"error: --log {kind} needs {kind}: pip install 'optbench[{kind}]'"] or (
        len(lines) == 1 and f"--log {kind} needs {kind}: pip install 'optbench[{kind}]'" in lines[0]), r.output
    assert not list(root.rglob("*.parquet")) and not list(root.rglob("*.jsonl"))


def test_an_unknown_sink_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["run", "-w", "linreg", "--log", "csv", "--results-dir", str(tmp_path)])
    assert r.exit_code == 2 and "csv" in r.output


def test_tune_with_two_workers_writes_one_jsonl_per_trial(results):
    r = CliRunner().invoke(main, ["tune", "-w", "linreg", "-s", "sgd", "--trials", "2", "--studies", "1",
                                  "--max-steps", "20", "--eval-every", "10", "--device", "cpu", "--jobs", "2",
                                  "--quiet", "--log", "jsonl", "--results-dir", str(results)])
    assert r.exit_code == 0, r.output
    files = _logs(results, "*.jsonl")
    assert len(files) == 2 and len({f.name for f in files}) == 2  # one run name per trial
    from optbench.store.reader import read_trial
    from optbench.sweep.engine import record_identity

    parquets = list(results.rglob("*.parquet"))
    assert len(parquets) == 2  # the Parquet files stay the record
    for p in parquets:  # each trial's log matches its record (a tuned trial may diverge and stop early)
        rec, rows = read_trial(p)
        (f,) = [f for f in files if f.stem.endswith(record_identity(rec)[:8])]
        assert [x["step"] for x in _lines(f) if x["kind"] == "eval"] == list(rows["step"])


def test_readme_live_logging_commands_run(tmp_path, monkeypatch):
    """The "Watching trials live" commands, as written, with a budget of a few steps appended."""
    import shlex

    readme = Path(__file__).resolve().parent.parent / "README.md"
    section = readme.read_text().split("## Watching trials live", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(x.split("#", 1)[0])[1:] for x in section.splitlines() if x.startswith("    optbench ")]
    assert [c[c.index("--log") + 1] for c in commands] == ["jsonl", "tensorboard", "wandb"]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for i, args in enumerate(commands):  # one results directory each: the same trial is otherwise recorded
        r = CliRunner().invoke(main, [*args, "--max-steps", "3", "--quiet", "--results-dir", str(tmp_path / str(i))])
        assert r.exit_code == 0, r.output
    assert len(_logs(tmp_path / "0", "*.jsonl")) == 1
    assert _logs(tmp_path / "1", "events.out.tfevents.*") and _logs(tmp_path / "2", "offline-run-*/*.wandb")
