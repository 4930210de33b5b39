"""AlgoPerf submission files run unchanged (optbench.plugins.algoperf): each test submission of
tests/plugins/algoperf_subs trains on linreg and on the LM's tiny size (generated tokens), the AlgoPerf-format NAdamW
matches the built-in ``nadamw``, and every AlgoPerf hook is called where AlgoPerf calls it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine.loop import TrialLoop
from optbench.engine.runner import run_trial
from optbench.engine.prepared import TrialConfig, prepare
from optbench.errors import UsageError
from optbench.plugins.registry import load_submission, load_workload

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SUBS = Path(__file__).parent / "plugins" / "algoperf_subs"
NADAMW = f"algoperf:{SUBS / 'nadamw' / 'submission.py'}"
LM_VOCAB = 256

# Each test submission with values for the hyperparameters it reads (-o, since only NAdamW ships a search space).
CASES = {
    "nadamw": (NADAMW, {}),
    "sgd_momentum": (f"algoperf:{SUBS / 'sgd_momentum.py'}@{SUBS / 'tuning_search_space_sgd.json'}", {}),
    "ema_eval": (f"algoperf:{SUBS / 'ema_eval.py'}", {"learning_rate": 0.01, "ema_decay": 0.9}),
    "selective": (f"algoperf:{SUBS / 'selective.py'}", {"learning_rate": 0.005}),
    "self_tuning": (f"algoperf:{SUBS / 'self_tuning.py'}", {}),
    "sam": (f"algoperf:{SUBS / 'sam.py'}", {"learning_rate": 0.02, "rho": 0.05}),
}


@pytest.fixture(autouse=True)
def root_logging_restored():
    """absl-py binds its handler to the stderr of the moment it is imported, and its ``logging.info`` calls
    ``logging.basicConfig()`` when the root logger has no handler: under pytest that is a capture stream, closed
    afterwards, and a later test that flushes every handler (tests/test_readme.py's cluster commands) then dies on
    it. Point both back at the real stderr after each test."""
    import logging

    before = list(logging.root.handlers)
    yield
    for handler in [h for h in logging.root.handlers if h not in before]:
        logging.root.removeHandler(handler)
    absl_logging = sys.modules.get("absl.logging")  # absl-py, when a submission imported it under capture: its
    if absl_logging is not None and hasattr(absl_logging, "get_absl_handler"):  # handler kept that stream
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


def module_of(spec: str):
    return load_submission(spec).obj.module


def lm_task(prep):
    """The LM workload's task at ``prep``'s size on generated tokens (a small vocabulary: same code paths)."""
    from optbench_workloads import lm

    tokens = np.random.default_rng(0).integers(0, LM_VOCAB, 12_000)
    return lm.LMTask(prep.size, torch.device("cpu"), train=tokens[:10_000], val=tokens[10_000:],
                     vocab_size=LM_VOCAB)


def loop_for(workload: str, spec: str, hparams: dict, tmp: Path, **cfg) -> TrialLoop:
    config = TrialConfig(device="cpu", hparams=hparams, **{"max_steps": 6, "eval_every_steps": 3, **cfg})
    prep = prepare(load_workload(workload), load_submission(spec), config, results_dir=tmp)
    if workload == "wikitext":
        prep = dataclasses.replace(prep, size=dataclasses.replace(prep.size, options={**prep.size.options,
                                                                                      "val_sequences": 4}))
        task = lm_task(prep)
    else:
        task = prep.workload.obj.setup(prep.size, device=torch.device("cpu"), data_dir=None)
    return TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())


@pytest.mark.parametrize("workload", ["linreg", "wikitext"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_submission_trains_with_no_harness_forward_or_backward(case: str, workload: str, tmp_path: Path):
    spec, hp = CASES[case]
    loop = loop_for(workload, spec, hp, tmp_path)
    before = [p.detach().clone() for p in loop.state.model.parameters()]
    outcome, _ = loop.run()
    assert outcome in ("reached", "missed") and loop.state.counters.step == 6
    assert loop.stepper.passes == 0  # the harness ran no pass of its own: every timed second is the submission's
    assert any(not torch.equal(a, p) for a, p in zip(before, loop.state.model.parameters()))
    rows = loop.state.rows
    assert [r.step for r in rows] == [0, 3, 6] and all(np.isfinite(r.train_loss) for r in rows[1:])
    assert "workload's" in json.loads(rows[-1].metrics_json)["algoperf_batch_size"]  # the fallback, on the record


def test_nadamw_matches_the_built_in_nadamw(tmp_path: Path):
    """Same hyperparameters (the search space's first point is nadamw's defaults): same steps to the target."""
    runs = {}
    for spec in (NADAMW, "nadamw"):
        r = run_trial(load_workload("linreg"), load_submission(spec), TrialConfig(device="cpu"),
                      results_dir=tmp_path)
        runs[spec] = r.record
    ours, theirs = runs[NADAMW], runs["nadamw"]
    assert ours.outcome == theirs.outcome == "reached"
    period = load_workload("linreg").obj.sizes["tiny"].eval_every.steps
    assert abs(ours.steps_to_target - theirs.steps_to_target) <= period
    assert json.loads(ours.hparams)["learning_rate"] == pytest.approx(json.loads(theirs.hparams)["lr"])
    assert ours.submission == "algoperf:nadamw/submission.py"


def test_prepare_for_eval_runs_before_every_evaluation_and_the_weights_swap_back(tmp_path: Path):
    spec, hp = CASES["ema_eval"]
    calls = module_of(spec).calls
    start = dict(calls)
    loop = loop_for("linreg", spec, hp, tmp_path)
    loop.run()
    assert calls["prepare_for_eval"] - start["prepare_for_eval"] == 3  # steps 0, 3, 6
    assert calls["swapped_back"] - start["swapped_back"] == 2  # at the first update after each mid-run evaluation


def test_data_selection_is_called_every_step_and_its_batch_is_counted(tmp_path: Path):
    spec, hp = CASES["selective"]
    calls = module_of(spec).calls
    start = calls["data_selection"]
    loop = loop_for("linreg", spec, hp, tmp_path)
    loop.run()
    assert calls["data_selection"] - start == 6
    assert loop.state.counters.examples == 6 * loop.prep.batch_size
    plain = loop_for("linreg", CASES["nadamw"][0], {}, tmp_path)
    plain.run()
    assert loop.state.data_gen.get_state().tolist() != plain.state.data_gen.get_state().tolist()  # 12 draws, not 6


def test_self_tuning_gets_no_hyperparameters_a_key_per_step_and_the_train_state(tmp_path: Path):
    spec, _ = CASES["self_tuning"]
    seen = module_of(spec).seen
    loop = loop_for("linreg", spec, {}, tmp_path)
    loop.run()
    assert seen["hyperparameters"] is None and seen["global_step"] == 5
    assert len(set(seen["rngs"][-6:])) == 6  # a fresh key every step
    assert seen["train_state"]["accumulated_submission_time"] == pytest.approx(loop.state.rows[1].timed_seconds,
                                                                               abs=loop.state.clock.timed)
    assert [s for s, _ in seen["eval_results"]] == [0, 3]
    assert "validation/excess_risk" in seen["eval_results"][-1][1]


def test_training_complete_ends_the_trial_as_a_recorded_outcome(tmp_path: Path):
    spec = f"algoperf:{SUBS / 'complete.py'}"
    r = run_trial(load_workload("linreg"), load_submission(spec),
                  TrialConfig(device="cpu", hparams={"learning_rate": 0.01, "stop_after": 4}, eval_every_steps=100),
                  results_dir=tmp_path)
    assert r.record.outcome == "missed" and r.record.total_steps == 4
    assert "TrainingCompleteError" in r.record.error and r.path.is_file()
    assert [row.step for row in r.rows] == [0, 4]  # the free evaluation after the last step


def test_tune_runs_the_search_space_as_external_tuning(tmp_path: Path):
    r = CliRunner().invoke(main, ["tune", "-w", "linreg", "-s", NADAMW, "--trials", "2", "--studies", "1",
                                  "--max-steps", "20", "--results-dir", str(tmp_path), "--device", "cpu"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    from optbench.store.reader import read_results

    trials = read_results(tmp_path).trials
    lrs = sorted(json.loads(h)["learning_rate"] for h in trials["hparams"])
    assert len(trials) == 2 and len(set(lrs)) == 2 and 1e-3 <= lrs[0] < lrs[1] <= 1e-1


@pytest.mark.parametrize("spec,needle", [
    (f"algoperf:{SUBS / 'not_algoperf.py'}", "not an AlgoPerf submission: no update_params()"),
    (f"algoperf:{SUBS / 'missing.py'}", "no such file"),
    (f"algoperf:{SUBS / 'nadamw'}", "algoperf:path/to/submission.py"),
    (f"algoperf:{SUBS / 'sgd_momentum.py'}@{SUBS / 'nope.json'}", "no such search-space file"),
])
def test_a_bad_file_is_one_line_and_exit_code_2(spec: str, needle: str, tmp_path: Path):
    r = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", spec, "--results-dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output and not list(tmp_path.rglob("*.parquet"))


def test_a_key_outside_the_search_space_is_refused(tmp_path: Path):
    with pytest.raises(UsageError, match="no hyperparameter lr"):
        prepare(load_workload("linreg"), load_submission(NADAMW), TrialConfig(hparams={"lr": 0.1}),
                results_dir=tmp_path)


def test_resume_continues_bit_for_bit(tmp_path: Path):
    """The adapter's state (optimizer, scheduler) is saved and restored with the trial: 3 + 3 steps from a
    checkpoint give what 6 steps in one go give."""
    spec = CASES["nadamw"][0]
    whole = loop_for("linreg", spec, {}, tmp_path)
    for _ in range(6):
        whole.step()
    half = loop_for("linreg", spec, {}, tmp_path)
    for _ in range(3):
        half.step()
    saved = half.state.state_dict()
    torch.save(saved, tmp_path / "s.pt")
    resumed = loop_for("linreg", spec, {}, tmp_path)
    resumed.state.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for _ in range(3):
        resumed.step()
    for a, b in zip(whole.state.model.parameters(), resumed.state.model.parameters()):
        assert torch.equal(a, b)
    assert resumed.state.updater.param_groups[0]["lr"] == whole.state.updater.param_groups[0]["lr"]


def test_a_state_no_checkpoint_can_hold_refuses_checkpoints_before_training(tmp_path: Path):
    spec = f"algoperf:{SUBS / 'unsaveable.py'}"
    r = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", spec, "--checkpoint-every", "1", "--results-dir",
                                  str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 2 and "optimizer_state['thing'] holds a Opaque" in r.output, r.output
    assert not list(tmp_path.rglob("*.parquet"))
    ok = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", spec, "--max-steps", "5", "--results-dir",
                                   str(tmp_path), "--device", "cpu", "--quiet"])
    assert ok.exit_code == 0, ok.output


def test_the_stand_ins_never_shadow_installed_packages(monkeypatch: pytest.MonkeyPatch):
    from optbench.plugins.algoperf import imports

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(imports.STAND_INS["absl"])])
    real = importlib.util.find_spec("absl")
    assert imports.ensure("absl") == ("installed" if real is not None else "stand-in")
    if real is not None:
        assert str(imports.STAND_INS["absl"]) not in sys.path
    assert imports.ensure("algoperf") in ("installed", "stand-in")
    import algoperf as ap  # the real package where installed, else the stand-in

    assert getattr(ap, "OPTBENCH_SHIM", False) == (imports.ensure("algoperf") == "stand-in")


def test_the_absl_stand_in_logs_through_python_logging(caplog: pytest.LogCaptureFixture):
    from optbench.plugins.algoperf.imports import STAND_INS

    spec = importlib.util.spec_from_file_location("absl_stand_in_logging", STAND_INS["absl"] / "absl" / "logging.py")
    logging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(logging)
    with caplog.at_level("INFO", logger="absl"):
        logging.info("%d) loss = %0.3f", 3, 0.5)
    assert "3) loss = 0.500" in caplog.text


def test_the_readme_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """README, "Bring an AlgoPerf submission": its command as written (from the checkout), a short budget appended."""
    import shlex

    root = Path(__file__).resolve().parent.parent
    section = (root / "README.md").read_text().split("## Bring an AlgoPerf submission", 1)[1].split("\n## ", 1)[0]
    line = next(x.strip() for x in section.splitlines() if x.startswith("    optbench "))
    monkeypatch.chdir(root)
    r = CliRunner().invoke(main, [*shlex.split(line)[1:], "--max-steps", "20", "--quiet", "--device", "cpu",
                                  "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert len(list(tmp_path.rglob("*.parquet"))) == 1


def test_run_takes_a_search_space_for_algoperf_files_only(tmp_path: Path):
    space = SUBS / "tuning_search_space_sgd.json"
    r = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", f"algoperf:{SUBS / 'sgd_momentum.py'}",
                                  "--search-space", str(space), "--max-steps", "5", "--quiet", "--device", "cpu",
                                  "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    from optbench.store.reader import read_results

    trial = read_results(tmp_path).trials.iloc[0]
    assert json.loads(trial["hparams"]) == {"learning_rate": 0.02, "momentum": 0.9}  # the list's first point
    assert trial["submission"] == "algoperf:algoperf_subs/sgd_momentum.py@tuning_search_space_sgd.json"
    bad = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "--search-space", str(space),
                                    "--results-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--search-space applies to algoperf:FILE" in bad.output
