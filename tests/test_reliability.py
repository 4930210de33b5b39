"""Issue 8's guarantees, pinned: bad input is one line and exit 2 before anything trains; faults are outcomes;
nothing computed is lost; concurrent tunes run each trial once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.sweep import claims
from optbench.cli import main
from optbench.engine.prepared import MAX_SEED, TrialConfig, prepare
from optbench.plugins.registry import load_submission, load_workload
from optbench.store.reader import read_results

FAULTY = Path(__file__).parent / "plugins" / "faulty.py"
TINY = ("--max-steps", "40", "--eval-every", "20")


def cli(*args: str, env: dict[str, str] | None = None):
    """Run the CLI in process; exceptions are kept on the result, never raised (a traceback would be the bug)."""
    return CliRunner().invoke(main, list(args), env=env)


def one_line_usage_error(r) -> str:
    """Assert the result is exit 2 with a single 'error:' line and no traceback; return that line."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


def trials(results: Path):
    return read_results(results).trials


# ---------------------------------------------------------------------------------------------------- bad input
BAD_RUN = [
    (("--seed", str(2**63)), "--seed"),
    (("--seed", "-1"), "--seed"),
    (("--max-steps", str(2**63)), "--max-steps"),
    (("--max-steps", "0"), "--max-steps"),
    (("--batch-size", str(2**63)), "--batch-size"),
    (("-o", "batch_size=1e30"), "batch_size"),
    (("-o", "batch_size=abc"), "batch_size"),
    (("-o", "batch_size=nan"), "batch_size"),
    (("-o", "batch_size=NaN"), "batch_size"),
    (("-o", "batch_size=[1]"), "batch_size"),
    (("-o", "batch_size=Infinity"), "batch_size"),
    (("-o", "batch_size=2.5"), "batch_size"),
    (("-o", "batch_size=true"), "batch_size"),
    (("--max-seconds", "nan"), "--max-seconds"),
    (("--max-seconds", "inf"), "--max-seconds"),
    (("--max-seconds", "-1"), "--max-seconds"),
    (("--timeout", "nan"), "--timeout"),
    (("--timeout", "0"), "--timeout"),
    (("--eval-every", "-3"), "--eval-every"),
    (("--warmup-steps", "-1"), "--warmup-steps"),
    (("-o", "lr=" + "[" * 5000 + "]" * 5000), "nested"),
    (("--study", ""), "--study"),
    (("--study", "a\nb"), "--study"),
    (("--study", "x" * 300), "--study"),
    (("--device", "tpu"), "device"),
    (("--device", "cuda:abc"), "device"),
    (("--device", "mps"), "MPS is not available"),
]


@pytest.mark.parametrize("args,needle", BAD_RUN, ids=[" ".join(a)[:40] for a, _ in BAD_RUN])
def test_bad_run_input_is_one_line_and_nothing_trains(args, needle, results, tmp_path):
    marker = tmp_path / "marker"
    r = cli("run", "-s", f"{FAULTY}:Marking", "--results-dir", str(results), "--quiet", *TINY, *args,
            env={"OPTBENCH_TEST_MARKER": str(marker)})
    assert needle in one_line_usage_error(r)
    assert not marker.exists() and not list(results.rglob("*.parquet"))


def test_non_utf8_study_is_refused(results):
    study = b"st\xffudy".decode("utf-8", "surrogateescape")  # what the OS hands Python for such argv bytes
    r = cli("run", "--study", study, "--results-dir", str(results), "--quiet", *TINY)
    assert "UTF-8" in one_line_usage_error(r)


@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000, '{"lr": ' * 40 + "1" + "}" * 40])
def test_deeply_nested_json_files(nested, results, tmp_path):
    hp = tmp_path / "hp.json"
    hp.write_text(nested)
    assert "nested" in one_line_usage_error(cli("run", "--hparams", str(hp), "--results-dir", str(results)))
    assert "nested" in one_line_usage_error(cli("tune", "--search-space", str(hp), "--results-dir", str(results)))


@pytest.mark.parametrize("args,needle", [
    (("--trials", str(2**70)), "--trials"),
    (("--studies", "1000000000"), "--studies"),
    (("--trials", "400", "--studies", "400"), "at most"),
    (("--jobs", "0"), "--jobs"),
    (("--seed", str(2**64)), "--seed"),
    (("--ruleset", "self", "--budget-multiplier", "nan"), "--budget-multiplier"),
    (("--max-seconds", "nan"), "--max-seconds"),
    (("-o", "x=1"), "No such option"),
])
def test_bad_tune_input_is_one_line_and_fast(args, needle, results):
    start = time.perf_counter()
    r = cli("tune", "--results-dir", str(results), "--quiet", *args)
    assert needle in one_line_usage_error(r)
    assert time.perf_counter() - start < 20  # planning a billion studies used to hang
    assert not list(results.rglob("*.parquet"))


def test_unwritable_results_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    marker = tmp_path / "marker"
    below = blocker / "results"
    r = cli("run", "-s", f"{FAULTY}:Marking", "--results-dir", str(below), "--quiet", *TINY,
            env={"OPTBENCH_TEST_MARKER": str(marker)})
    line = one_line_usage_error(r)
    assert str(below) in line and "not writable" in line
    assert not marker.exists()
    r = cli("tune", "--results-dir", str(below), "--trials", "1", "--studies", "1", "--quiet", *TINY)
    assert str(below) in one_line_usage_error(r)


@pytest.mark.parametrize("command", ["run", "tune"])
def test_a_blocked_trial_folder_below_a_writable_root_fails_before_training(command, results, tmp_path):
    results.mkdir()
    (results / "linreg-tiny").write_text("a file where the workload's folder goes")
    marker = tmp_path / "marker"
    extra = ("--trials", "1", "--studies", "1", "--search-space", str(tmp_path / "s.json")) if command == "tune" else ()
    (tmp_path / "s.json").write_text('[{"lr": 0.01}]')
    r = cli(command, "-s", f"{FAULTY}:Marking", "--results-dir", str(results), "--quiet", *TINY, *extra,
            env={"OPTBENCH_TEST_MARKER": str(marker)})
    assert str(results / "linreg-tiny") in one_line_usage_error(r)
    assert not marker.exists()


@pytest.mark.parametrize("command", [("score",), ("report", "--out", "rep"), ("data", "list"),
                                     ("tune", "--trials", "1", "--studies", "1")])
def test_a_path_longer_than_the_file_system_allows_is_one_line(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long = "9" * 400  # one name past NAME_MAX: lookups raise OSError instead of answering False
    option = "--data-dir" if command[0] == "data" else "--results-dir"
    r = cli(*command, option, long)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code in (0, 2) and "Traceback" not in r.output
    if r.exit_code == 2:
        one_line_usage_error(r)


def test_prepared_trial_holds_validated_values_and_travels_as_json(results):
    w, s = load_workload("linreg"), load_submission("adamw")
    cfg = TrialConfig(seed=MAX_SEED, hparams={"batch_size": 64.0, "lr": 0.01})
    prep = prepare(w, s, cfg, results_dir=results)
    assert prep.batch_size == 64 and isinstance(prep.batch_size, int) and prep.hparams["lr"] == 0.01
    assert prep.study == f"seed{MAX_SEED}" and json.loads(prep.hparams_json)["lr"] == 0.01
    # how it travels to a worker process: its config as JSON, prepared again there
    again = prepare(w, s, TrialConfig.from_json(json.loads(json.dumps(cfg.to_json()))), results_dir=results)
    assert again.identity() == prep.identity() and again.info == prep.info and again.size == prep.size


# ------------------------------------------------------------------------------------------------------ faults
@pytest.mark.parametrize("plugin", ["Hanging", "Spinning", "Deadlocked"])
def test_a_step_that_never_returns_ends_as_timeout_and_the_next_trial_runs(plugin, results):
    start = time.perf_counter()
    r = cli("run", "-s", f"{FAULTY}:{plugin}", "-s", "sgd", "--timeout", "8", "--results-dir", str(results),
            "--quiet", *TINY)
    elapsed = time.perf_counter() - start
    assert r.exit_code == 0 and r.exception is None, r.output
    t = trials(results).set_index("submission")
    assert t.loc[f"faulty.py:{plugin}", "outcome"] == "timeout"
    assert "8 s" in t.loc[f"faulty.py:{plugin}", "error"]
    assert t.loc["sgd", "outcome"] in ("reached", "missed")
    # 8 s of deadline + the sgd trial (the same limit: generous for a loaded machine), not the plugin's 60 s
    assert elapsed < 45, elapsed


def test_a_hanging_warmup_step_ends_as_timeout(results):
    r = cli("run", "-s", f"{FAULTY}:Hanging", "-o", "after=1", "--warmup-steps", "3", "--timeout", "1.5",
            "--results-dir", str(results), "--quiet", *TINY)
    assert r.exit_code == 0, r.output
    assert list(trials(results)["outcome"]) == ["timeout"]


def test_system_exit_in_a_plugin_is_an_error_outcome(results):
    home = FAULTY.parent.parent  # stands in for /home/<user>: the plugin lives below it
    r = cli("run", "-s", f"{FAULTY}:Exiting", "-s", "sgd", "--results-dir", str(results), "--quiet", *TINY,
            env={"HOME": str(home)})
    assert r.exit_code == 0 and r.exception is None, r.output
    t = trials(results).set_index("submission")  # a file plugin is recorded by its file's name, no folders
    error = t.loc["faulty.py:Exiting", "error"]
    assert t.loc["faulty.py:Exiting", "outcome"] == "error" and "SystemExit" in error
    assert "~/plugins/faulty.py" in error and str(home) not in error  # no user's folder in the traceback
    assert t.loc["sgd", "outcome"] in ("reached", "missed")


def test_ctrl_c_records_the_trial_as_interrupted_and_stops_the_command(results):
    r = cli("run", "-s", f"{FAULTY}:Interrupting", "-s", "sgd", "--results-dir", str(results), "--quiet", *TINY)
    assert r.exit_code == 130, (r.exit_code, r.output)
    t = trials(results)
    assert list(t["submission"]) == ["faulty.py:Interrupting"]  # recorded; the sgd trial never started
    assert list(t["outcome"]) == ["interrupted"] and list(t["total_steps"]) == [2]
    assert cli("score", "--results-dir", str(results)).exit_code == 0  # an interrupted trial scores as not reached


@pytest.mark.parametrize("every", ["0.000001", None])  # a checkpoint to resume from; interrupted before any
def test_a_resumed_trial_counts_once(tmp_path, every):
    results, flag = tmp_path / "results", tmp_path / "interrupt"
    flag.touch()
    env = {"OPTBENCH_TEST_INTERRUPT": str(flag)}
    checkpointing = ("--checkpoint-every", every) if every else ("--resume",)
    args = ("run", "-s", f"{FAULTY}:InterruptedOnce", "--results-dir", str(results), "--quiet", *TINY)
    assert cli(*args, *checkpointing, env=env).exit_code == 130
    assert list(trials(results)["outcome"]) == ["interrupted"]
    flag.unlink()
    r = cli(*args, "--resume", env=env)
    assert r.exit_code == 0, r.output
    t = trials(results)
    assert list(t["outcome"]) == ["reached"] or list(t["outcome"]) == ["missed"]  # the interrupted record is gone
    assert list(t["resumes"]) == [1 if every else 0] and list(t["total_steps"]) == [40]
    assert not list((results / ".checkpoints").rglob("*.interrupted"))


def test_a_failed_final_write_keeps_the_result_elsewhere_and_says_where(tmp_path):
    results, data = tmp_path / "results", tmp_path / "data"
    r = cli("run", "-s", f"{FAULTY}:Sabotage", "-s", "sgd", "--results-dir", str(results), "--quiet", *TINY,
            env={"OPTBENCH_TEST_SABOTAGE": str(results), "OPTBENCH_DATA": str(data)})
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output  # a result lives elsewhere
    rescued = data / "rescued-results"
    assert "kept at" in r.output and str(rescued) in r.output
    kept = trials(rescued)
    assert sorted(kept["submission"]) == ["faulty.py:Sabotage", "sgd"]  # both trials, nothing lost
    assert set(kept["outcome"]) <= {"reached", "missed"}


# ------------------------------------------------------------------------------------------------- concurrency
def _tune(results: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "optbench.cli", "tune", "-w", "linreg", "-s", "adamw", "-s", "sgd", "--trials", "3",
           "--studies", "1", "--max-steps", "60", "--eval-every", "30", "--results-dir", str(results), "--quiet",
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_tunes_on_one_study_run_each_trial_once(results):
    procs = [_tune(results), _tune(results)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    t = trials(results)
    keys = list(zip(t["submission"], t["study"], t["trial"]))
    assert len(keys) == 6 and len(set(keys)) == 6, sorted(keys)
    assert not list((results / claims.CLAIMS_DIR).glob("*.claim"))  # every claim ended as done
    again = _tune(results)
    assert "0 trials run, 6 skipped" in again.communicate(timeout=300)[0]


def test_a_dead_owners_claim_is_recovered_and_a_live_one_respected(results, tmp_path):
    from optbench.sweep.tuning import TuneSpec, plan, tune

    spec = TuneSpec(workload="linreg", submissions=("sgd",), trials=2, studies=1,
                    trial=TrialConfig(**{"max_steps": 40, "eval_every_steps": 20}))
    w, s = load_workload("linreg"), load_submission("sgd")
    cells = plan(spec, [s])
    ids = [prepare(w, s, TrialConfig(hparams=dict(c.hparams), seed=c.seed, study=c.study, trial=c.trial,
                                     max_steps=40, eval_every_steps=20), results_dir=results).identity()
           for c in cells]
    folder = claims.claims_dir(results)
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (folder / f"{ids[0]}.claim").write_text(json.dumps({**claims.owner(), "pid": int(dead.stdout)}))
        (folder / f"{ids[1]}.claim").write_text(json.dumps({**claims.owner(), "pid": live.pid, "started": ""}))
        out = tune(spec, results_dir=results)
    finally:
        live.kill()
    assert [p.trial for p, _ in out.finished] == [cells[0].trial]  # the dead owner's trial was taken over
    assert len(out.skipped) == 1 and out.skipped[0].trial == cells[1].trial  # the live owner keeps its trial
