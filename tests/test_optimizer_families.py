"""Plain optimizer classes of every family run from ``module:Attr`` as they are, measured where they should be.

Table-driven over the family classes of tests/plugins/families.py (schedule-free train/eval modes, a required
closure, a step that needs the gradients' graph), then over the real packages where they are installed. Each runs
a real linreg trial through the CLI; the test reads its Parquet record (capabilities, outcome) and the class's log
(when ``eval()`` was called).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from optbench.api import Capability
from optbench.cli import main
from optbench.engine.prepared import TrialConfig, prepare
from optbench.engine.stepping import Stepper
from optbench.parallel.distributed import World
from optbench.plugins.registry import load_submission, load_workload
from tests.plugins.families import DiagonalNewton, LineSearch, ModeSwitching, reset_logs

FAMILIES = "tests.plugins.families"  # as a module: the class whose logs the test reads
C, E, G = Capability.CLOSURE, Capability.EVAL_PARAMS, Capability.CREATE_GRAPH
# spec -> what detection must find
DETECTED = {
    f"{FAMILIES}:ModeSwitching": {E},
    f"{FAMILIES}:LineSearch": {C},
    f"{FAMILIES}:DiagonalNewton": {G},
    f"{FAMILIES}:QuietNewton": set(),  # nothing in its own source says so: --create-graph declares it
    "torch.optim:LBFGS": {C},
    "torch.optim:Adam": set(),
}
LINREG = load_workload("linreg")


def run(results: Path, spec: str, *args: str, steps: int = 60, every: int = 20) -> tuple[int, str, dict]:
    """``optbench run`` of ``spec`` on linreg; (exit code, output, the record's metadata or {})."""
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", spec, *args, "--max-steps", str(steps),
                                    "--eval-every", str(every), "--quiet", "--results-dir", str(results)])
    paths = list(results.rglob("*.parquet"))
    meta = json.loads(pq.read_schema(paths[0]).metadata[b"optbench"]) if paths else {}
    return res.exit_code, res.output, meta


def eval_steps(path: Path) -> list[int]:
    return pq.read_table(path, columns=["step"]).column(0).to_pylist()


@pytest.mark.parametrize("spec", sorted(DETECTED))
def test_each_family_s_need_is_detected_on_the_submission(spec: str) -> None:
    assert set(load_submission(spec).obj.capabilities) == DETECTED[spec]


def test_a_schedule_free_class_trains_in_train_mode_and_is_evaluated_in_eval_mode(results: Path) -> None:
    reset_logs()
    code, out, meta = run(results, f"{FAMILIES}:ModeSwitching")
    assert code == 0 and meta["outcome"] != "error", out + str(meta.get("error"))
    assert meta["capabilities"] == "eval_params"
    steps = eval_steps(next(results.rglob("*.parquet")))
    log = ModeSwitching.log
    assert log[0] == ("train", 0)  # put in train mode as it was built: its step() raises otherwise
    evals = [step for kind, step in log if kind == "eval"]
    assert evals == steps  # eval() right before every evaluation, at the step evaluated...
    assert [kind for kind, _ in log[1:]] == ["eval", "train"] * len(steps)  # ... and back to train mode after


def test_evaluating_the_averaged_weights_is_what_the_record_shows(results: Path) -> None:
    """The record's metric is the averaged weights' (x), which differ measurably from the training iterate's (y):
    rerunning the same trial with the swap disabled gives another metric."""
    reset_logs()
    _, _, with_swap = run(results / "a", f"{FAMILIES}:ModeSwitching", steps=40, every=40)
    original = ModeSwitching.eval
    ModeSwitching.eval = lambda self: ModeSwitching.log.append(("eval", self.taken))  # type: ignore[method-assign]
    try:
        _, _, without = run(results / "b", f"{FAMILIES}:ModeSwitching", steps=40, every=40)
    finally:
        ModeSwitching.eval = original  # type: ignore[method-assign]
    assert with_swap["outcome"] != "error" and without["outcome"] != "error"
    assert abs(with_swap["best_metric"] - without["best_metric"]) > 1e-3


def test_a_closure_class_gets_its_closure_and_calls_it_several_times(results: Path) -> None:
    reset_logs()
    code, out, meta = run(results, f"{FAMILIES}:LineSearch", steps=30, every=10)
    assert code == 0 and meta["outcome"] != "error", out + str(meta.get("error"))
    assert meta["capabilities"] == "closure" and meta["total_steps"] == 30
    assert len(LineSearch.calls) >= 30 and min(LineSearch.calls) >= 2


def test_without_the_graph_a_hessian_class_fails_and_says_so(results: Path) -> None:
    code, _, meta = run(results, f"{FAMILIES}:QuietNewton", steps=5, every=5)
    assert code == 0 and meta["outcome"] == "error" and "create_graph=True" in meta["error"]
    assert meta["capabilities"] == ""


@pytest.mark.parametrize(("spec", "args"), [(f"{FAMILIES}:DiagonalNewton", ()),
                                            (f"{FAMILIES}:QuietNewton", ("--create-graph",))])
def test_a_hessian_class_trains_with_the_graph_detected_or_declared(results: Path, spec: str,
                                                                    args: tuple[str, ...]) -> None:
    reset_logs()
    code, out, meta = run(results, spec, *args, steps=30, every=10)
    assert code == 0 and meta["outcome"] != "error", out + str(meta.get("error"))
    assert meta["capabilities"] == "create_graph" and len(DiagonalNewton.steps) >= 30
    assert json.loads(meta["hparams"]).get("create_graph") is (True if args else None)
    assert meta["optimizer_flops_per_step"] > 0  # counted on differentiable gradients, not refused


def test_check_plugin_hands_a_hessian_class_the_graph() -> None:
    from optbench.engine.conformance import _new_model, _train

    sub = load_submission(f"{FAMILIES}:DiagonalNewton").obj
    reset_logs()
    _train(sub, _new_model(), 3)  # raises "no grad_fn" when the checks' own backward drops the graph
    assert len(DiagonalNewton.steps) == 3


def test_the_stepper_keeps_the_graph_when_asked() -> None:
    """Stepper(create_graph=True) leaves gradients a Hessian-vector product can differentiate, and the
    Hessian class then trains; without it the same class raises."""
    task = LINREG.obj.setup(LINREG.obj.sizes["tiny"], device=torch.device("cpu"), data_dir=None)
    gen = torch.Generator().manual_seed(0)
    batch = task.next_batch(32, gen)
    for create_graph in (False, True):
        m = task.init_model(torch.Generator().manual_seed(0))
        st = Stepper(task=task, model=m, params_of=m, micro=None, world=World(), group=None, sample_gen=gen,
                     create_graph=create_graph)
        opt = DiagonalNewton(m.parameters())
        first = float(st.backward(batch))
        if not create_graph:
            with pytest.raises(RuntimeError, match="create_graph=True"):
                opt.step()
            continue
        for _ in range(20):
            opt.step()
            opt.zero_grad(set_to_none=True)
            last = float(st.backward(batch))
        assert last < 0.75 * first  # it learns


def test_declaring_the_graph_makes_another_trial() -> None:
    """--create-graph gives the plain class the capability and joins its hyperparameters, so that the trial's
    identity differs from the one run without it (whose ``error`` would otherwise count as already recorded)."""
    quiet = load_submission(f"{FAMILIES}:QuietNewton")
    plain, declared = (prepare(LINREG, quiet, TrialConfig(create_graph=flag), results_dir=Path("unused"))
                       for flag in (False, True))
    assert G not in plain.submission.obj.capabilities and G in declared.submission.obj.capabilities
    assert "create_graph" not in plain.hparams and declared.hparams["create_graph"] is True
    assert plain.identity() != declared.identity()
    detected = prepare(LINREG, load_submission(f"{FAMILIES}:DiagonalNewton"), TrialConfig(create_graph=True),
                       results_dir=Path("unused"))
    assert "create_graph" not in detected.hparams  # already its own capability: nothing to declare


def test_create_graph_is_for_plain_classes_only(results: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "--create-graph", "--max-steps", "5",
                                    "--quiet", "--results-dir", str(results)])
    assert res.exit_code == 2 and "--create-graph is for plain optimizer classes" in res.output
    assert not list(results.rglob("*.parquet"))


# ------------------------------------------------------------------------------------------- the real packages
REAL = [  # (module, class, -o values, capabilities, needs the graph)
    ("pytorch_optimizer", "ScheduleFreeAdamW", ("lr=0.01",), "eval_params", False),
    ("schedulefree", "AdamWScheduleFree", ("lr=0.01",), "eval_params", False),
    ("schedulefree", "AdamWScheduleFreeClosure", ("lr=0.01",), "closure", False),
    ("torch.optim", "LBFGS", ("lr=0.5", "max_iter=4"), "closure", False),
    ("torch_optimizer", "Adahessian", ("lr=0.1",), "create_graph", True),
    ("pytorch_optimizer", "SophiaH", ("lr=0.01",), "create_graph", True),
]


@pytest.mark.parametrize(("module", "cls", "values", "caps", "graph"), REAL, ids=[r[1] for r in REAL])
def test_a_real_package_class_runs_as_it_is(results: Path, module: str, cls: str, values: tuple[str, ...],
                                            caps: str, graph: bool) -> None:
    pytest.importorskip(module)
    args = [a for v in values for a in ("-o", v)]
    code, out, meta = run(results, f"{module}:{cls}", *args, steps=20, every=10)
    assert code == 0 and meta["outcome"] != "error", out + str(meta.get("error"))
    assert meta["capabilities"] == caps

