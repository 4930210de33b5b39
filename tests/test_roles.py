"""Parameter roles (issue 20, item 2): every built-in workload names each parameter's role, the harness hands them to
the submission, and a plain class is given parameter groups by role with ``-o roles=... -o rest=... -o KEY@GROUP=...``:
``torch.optim:Muon`` (2-D only) and ``pytorch_optimizer:Muon`` (``use_muon`` per group) run from ``module:Attr``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from optbench.api import Role, named_params
from optbench.cli import main
from optbench.engine.loop import TrialLoop
from optbench.engine.prepared import TrialConfig, prepare
from optbench.errors import PluginError, UsageError
from optbench.plugins.groups import Combined, build
from optbench.plugins.registry import load_submission, load_workload
from optbench.plugins.roles import check_roles, default_roles, roles_of
from optbench_workloads._gpt import GPTConfig, build_gpt
from optbench_workloads._resnet import build_model
from optbench_workloads.cifar10 import CifarTask
from optbench_workloads.lm import LMTask
from tests.scale.helpers import make_loop, resumed_twin

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster

H, E, HD, NB = Role.HIDDEN, Role.EMBEDDING, Role.HEAD, Role.NORM_BIAS
# The documented command shape (README "Parameter groups by role"): Muon on the hidden matrices, AdamW on the rest.
TORCH_MUON = ["roles=hidden", "rest=torch.optim:AdamW", "lr=0.02", "lr@rest=0.01"]
PTO_MUON = ["roles=hidden", "use_muon@hidden=true", "rest=torch.optim:AdamW", "lr@rest=0.01"]


def _hp(items: list[str]) -> dict[str, object]:
    from optbench.plugins.hparams import parse_assignments

    return parse_assignments(items)


# ----- the built-in workloads' roles --------------------------------------------------------------------------------
def _gpt(**cfg: object) -> nn.Module:
    config = GPTConfig(vocab_size=64, seq_len=16, n_layer=2, n_head=2, d_model=16, **cfg)
    return build_gpt(config, torch.Generator().manual_seed(0))


def _cases() -> list[tuple[str, object, nn.Module, Counter]]:
    """(label, the object naming roles, a model of it, the roles' counts) for every built-in workload's models."""
    linreg = load_workload("linreg").obj
    lin_task = linreg.setup(linreg.sizes["tiny"], device=torch.device("cpu"), data_dir=None)
    teacher = load_workload("teacher").obj
    t_task = teacher.setup(teacher.sizes["tiny"], device=torch.device("cpu"), data_dir=None)
    gen = torch.Generator().manual_seed(0)
    air = build_model("airbench", widths=(8, 8, 8, 8), bn_momentum=0.1, generator=gen)
    res = build_model("resnet18", widths=(4,), bn_momentum=0.1, generator=gen)
    return [
        ("linreg", lin_task, lin_task.init_model(gen), Counter({HD: 1})),
        ("teacher", t_task, t_task.init_model(gen), Counter({H: 1, NB: 1, HD: 2})),
        ("cifar10 airbench", CifarTask, air, Counter({H: 7, NB: 14, HD: 1})),  # 7 convs, 7 BatchNorms, a bias-free head
        ("cifar10 resnet18", CifarTask, res, Counter({H: 20, NB: 40, HD: 2})),  # 17 + 3 shortcut convs, 20 BNs
        ("lm rope rms (tied)", LMTask, _gpt(), Counter({E: 1, H: 8, NB: 5})),  # 4 matrices and 2 norms per block
        ("lm learned layernorm", LMTask, _gpt(pos="learned", norm="layer"), Counter({E: 2, H: 8, NB: 10})),
        # the ladder's options: an untied lm_head, SwiGLU's gate as a fifth matrix, a bias in every linear layer
        ("lm untied swiglu bias", LMTask, _gpt(tie=False, mlp="swiglu", bias=True), Counter({E: 1, HD: 1, H: 10,
                                                                                            NB: 15})),
    ]


@pytest.mark.parametrize("label", [c[0] for c in _cases()])
def test_every_built_in_workload_names_every_parameter_once(label: str) -> None:
    (_, owner, model, counts), = [c for c in _cases() if c[0] == label]
    named = owner.param_roles(model) if not isinstance(owner, type) else owner.param_roles(None, model)
    roles = check_roles(model, named, where=label)  # every trainable parameter exactly once (tied weights once)
    assert Counter(roles.values()) == counts
    assert len(roles) == len(list(named_params(model)))
    # The module-type rule gives the same answer, so a submission sees the same roles with or without the harness.
    assert default_roles(model) == roles


def test_the_tied_head_is_the_embedding_named_once() -> None:
    model = _gpt()
    roles = LMTask.param_roles(None, model)  # type: ignore[arg-type]
    assert roles["embed.weight"] is E and not any(n.startswith("lm_head") for n in roles)
    assert model.embed.weight.data_ptr() in {p.data_ptr() for _, p in named_params(model)}


@pytest.mark.parametrize("bad, match", [
    (lambda r: r.pop("0.bias"), "without a role: 0.bias"),
    (lambda r: r.update({"1.weight": "hidden"}), "not a parameter: 1.weight"),
    (lambda r: r.update({"0.bias": "bias"}), "'bias' is not a valid Role"),
])
def test_roles_that_miss_or_invent_a_parameter_are_refused(bad, match: str) -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    roles: dict[str, object] = dict(default_roles(model))
    bad(roles)
    with pytest.raises(PluginError, match=match):
        check_roles(model, roles, where="t")


def test_the_harness_attaches_the_tasks_roles_for_the_submission(tmp_path: Path) -> None:
    loop = make_loop("teacher", "muon", tmp=tmp_path, max_steps=1)
    assert roles_of(loop.state.model) == loop.task.param_roles(loop.state.model)
    groups = loop.state.updater.param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]  # the built-in Muon routes by the same roles


# ----- groups by role for a plain class ------------------------------------------------------------------------------
def _loop(tmp: Path, workload: str, spec: str, items: list[str], **cfg: object) -> TrialLoop:
    from optbench.data.synthetic import markov_corpus

    tokens = markov_corpus(6_000, vocab=512) if workload == "wikitext" else None
    return make_loop(workload, spec, hparams=_hp(items), tokens=tokens, tmp=tmp, **cfg)


def _train(loop: TrialLoop, steps: int) -> tuple[float, float]:
    with torch.no_grad():
        first = float(loop.task.loss(loop.state.model, loop.task.next_batch(8, torch.Generator().manual_seed(5))))
    for _ in range(steps):
        loop.step()
    with torch.no_grad():
        last = float(loop.task.loss(loop.state.model, loop.task.next_batch(8, torch.Generator().manual_seed(5))))
    return first, last


def test_muon_on_hidden_matrices_and_adamw_on_the_rest_trains_the_teacher(tmp_path: Path) -> None:
    loop = _loop(tmp_path, "teacher", "torch.optim:Muon", TORCH_MUON, max_steps=300)
    up = loop.state.updater
    assert isinstance(up, Combined) and list(up.parts) == ["main", "rest"]
    assert type(up.parts["rest"]) is torch.optim.AdamW and up.parts["rest"].param_groups[0]["lr"] == 0.01
    (hidden,) = up.parts["main"].param_groups
    assert [p.dim() for p in hidden["params"]] == [2] and hidden["lr"] == 0.02
    first, last = _train(loop, 300)
    assert last < 0.1 * first  # from ~0.5 (the targets' variance / 2) to well below


@pytest.mark.parametrize("spec, items", [("torch.optim:Muon", TORCH_MUON), ("pytorch_optimizer:Muon", PTO_MUON)])
def test_muon_with_an_adamw_fallback_trains_a_language_model(tmp_path: Path, spec: str, items: list[str]) -> None:
    if spec.startswith("pytorch_optimizer"):
        pytest.importorskip("pytorch_optimizer")
    loop = _loop(tmp_path, "wikitext", spec, items, max_steps=25, batch_size=8)
    main_groups = loop.state.updater.parts["main"].param_groups
    assert {p.dim() for g in main_groups for p in g["params"]} == {2} and len(main_groups) == 1
    first, last = _train(loop, 25)
    assert first > 6.0 and last < first - 1.0  # ln 512 = 6.2 at the start


def _run(tmp: Path, args: list[str], spec: str, items: list[str]) -> dict[str, object]:
    """The trial row of ``optbench run ARGS -s SPEC -o ITEM...`` (which must succeed)."""
    opts = [arg for item in items for arg in ("-o", item)]
    res = CliRunner().invoke(main, ["run", *args, "-s", spec, *opts, "--quiet", "--device", "cpu", "--results-dir",
                                    str(tmp)])
    assert res.exit_code == 0, res.output
    (path,) = tmp.rglob("*.parquet")
    return pq.read_table(path, columns=["outcome", "best_metric", "hparams", "error"]).to_pylist()[0]


@pytest.mark.parametrize("spec, items", [("torch.optim:Muon", TORCH_MUON), ("pytorch_optimizer:Muon", PTO_MUON)])
def test_on_linreg_the_only_matrix_is_the_head_so_the_fallback_alone_trains(tmp_path: Path, spec: str,
                                                                           items: list[str]) -> None:
    if spec.startswith("pytorch_optimizer"):
        pytest.importorskip("pytorch_optimizer")
    row = _run(tmp_path, ["-w", "linreg", "--max-steps", "200", "--eval-every", "100"], spec, items)
    assert row["outcome"] in ("reached", "missed") and row["best_metric"] < 0.5  # from an excess risk of 1
    hparams = json.loads(row["hparams"])  # the grouping is recorded with the trial
    assert hparams["roles"] == "hidden" and hparams["rest"] == "torch.optim:AdamW" and hparams["lr@rest"] == 0.01


@pytest.mark.slow
@pytest.mark.parametrize("spec, items", [("torch.optim:Muon", ["ndim=2", *TORCH_MUON]),
                                         ("pytorch_optimizer:Muon", PTO_MUON)])
def test_on_cifar10_conv_kernels_go_where_the_class_can_take_them(tmp_path: Path, spec: str,
                                                                  items: list[str]) -> None:
    """torch's Muon takes 2-D only (``ndim=2``: airbench's kernels all go to AdamW); pytorch_optimizer's flattens."""
    if spec.startswith("pytorch_optimizer"):
        pytest.importorskip("pytorch_optimizer")
    from tests.workloads.test_cifar10 import write_cifar

    data = write_cifar(tmp_path / "data", n_train=64, n_val=32)
    row = _run(tmp_path / "results", ["-w", "cifar10", "--data-dir", str(data), "--max-steps", "3", "--batch-size",
                                      "16", "--eval-every", "3"], spec, items)
    assert row["outcome"] in ("reached", "missed"), row["error"]


def test_ndim_keeps_conv_kernels_away_from_a_2d_only_class() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    up = build(torch.optim.Muon, model, {"lr": 0.02}, _hp(["roles=hidden", "ndim=2", "rest=torch.optim:AdamW"]))
    assert [tuple(p.shape) for g in up.parts["main"].param_groups for p in g["params"]] == [(8, 8)]
    rest = [tuple(p.shape) for g in up.parts["rest"].param_groups for p in g["params"]]
    assert (4, 2, 3) in rest and (3, 8) in rest and len(rest) == 5
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    up.step()
    up.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_without_grouping_keys_a_plain_class_gets_model_parameters_as_before() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    opt = build(torch.optim.AdamW, model, {"lr": 0.1}, {"roles": "all", "ndim": None, "rest": None})
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 1


def test_a_grouped_trial_resumes_bit_for_bit(tmp_path: Path) -> None:
    hp = _hp(TORCH_MUON)
    prep = prepare(load_workload("teacher"), load_submission("torch.optim:Muon"),
                   TrialConfig(device="cpu", deterministic=True, max_steps=20, resume=True, hparams=hp),
                   results_dir=tmp_path)

    whole, second = resumed_twin(prep, steps=20, cut=10)
    assert set(second.state.updater.state_dict()) == {"main", "rest"} and second.state.counters.resumes == 1
    for a, b in zip(whole.state.model.parameters(), second.state.model.parameters(), strict=True):
        assert torch.equal(a, b)


# ----- mistakes: one line, exit code 2, nothing trained ---------------------------------------------------------------
@pytest.mark.parametrize("items, says", [
    (["roles=hiden", "rest=torch.optim:AdamW"], "expected roles among"),
    (["roles=hidden", "rest=torch.optim:AdamW", "bogus@hidden=1"], "Muon takes no option bogus"),
    (["roles=hidden", "rest=torch.nn:Linear"], "not a torch.optim.Optimizer subclass"),
    (["roles=hidden", "rest=no_such_module:Adam"], "cannot load it"),
    (["roles=hidden", "ndim=0", "rest=torch.optim:AdamW"], "expected a whole number of dimensions"),
    (["lr@rest=0.1"], "name the class with -o rest="),
])
def test_a_bad_grouping_is_refused_before_any_parameter_is_touched(items: list[str], says: str) -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(UsageError, match=says):
        build(torch.optim.Muon, model, {"lr": 0.02}, _hp(items))


@pytest.mark.parametrize("spec, items, says", [
    ("torch.optim:Muon", ["lr@hiden=0.1"], "no group 'hiden'"),
    ("torch.optim:Muon", ["roles=hidden"], "name one with -o rest="),
    ("torch.optim:Muon", ["roles=hidden", "rest=torch.optim:AdamW", "bogus@rest=1"], "AdamW takes no option bogus"),
    ("torch.optim:Muon", ["@hidden=1"], "a group option is KEY@GROUP=VALUE"),
    ("adamw", ["lr@hidden=0.1"], "takes no group option lr@hidden"),
])
def test_a_bad_grouping_is_one_line_and_exit_code_2(tmp_path: Path, spec: str, items: list[str], says: str) -> None:
    args = ["run", "-w", "teacher", "-s", spec, "--max-steps", "5", "--quiet", "--device", "cpu",
            "--results-dir", str(tmp_path)]
    res = CliRunner().invoke(main, args + [arg for item in items for arg in ("-o", item)])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and says in res.output, res.output
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_readme_command_runs_as_written(tmp_path: Path) -> None:
    """README "Parameter groups by role": its command, with a budget of a few steps appended, runs and records the
    grouping with the trial."""
    import shlex

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Parameter groups by role", 1)[1].split("\n## ", 1)[0]
    (line,) = [x.strip() for x in section.splitlines() if x.startswith("    optbench ")]
    args = shlex.split(line)[1:]
    assert args[:3] == ["run", "-w", "teacher"] and "roles=hidden" in args and "rest=torch.optim:AdamW" in args
    res = CliRunner().invoke(main, [*args, "--max-steps", "5", "--quiet", "--device", "cpu", "--results-dir",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.parquet")
    hparams = json.loads(pq.read_table(path, columns=["hparams"]).column(0)[0].as_py())
    assert hparams["lr@rest"] == 0.01 and hparams["roles"] == "hidden"


def test_a_schedule_free_class_given_groups_still_switches_modes(tmp_path: Path) -> None:
    """The grouped updater passes train()/eval() to the part that has modes: the class is evaluated at its averaged
    weights while its AdamW fallback, which has none, steps on."""
    from tests.plugins.families import ModeSwitching, reset_logs

    reset_logs()
    spec = "tests.plugins.families:ModeSwitching"
    row = _run(tmp_path, ["-w", "teacher", "--max-steps", "20", "--eval-every", "10"], spec,
               ["roles=hidden", "rest=torch.optim:AdamW"])
    assert row["outcome"] in ("reached", "missed"), row["error"]
    assert ("eval", 10) in ModeSwitching.log and ("eval", 20) in ModeSwitching.log


def test_group_keys_can_name_their_submission_in_a_command_with_several(tmp_path: Path) -> None:
    """``NAME.KEY@GROUP``: the ``.`` names the submission, the ``@`` the group, so a built-in beside the grouped
    class is not handed keys it cannot take."""
    spec = "torch.optim:Muon"
    items = [f"{spec}.{item}" for item in TORCH_MUON]
    res = CliRunner().invoke(main, ["run", "-w", "teacher", "-s", "adamw", "-s", spec,
                                    *[arg for item in items for arg in ("-o", item)], "--max-steps", "3", "--quiet",
                                    "--device", "cpu", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = [pq.read_table(p, columns=["submission", "hparams"]).to_pylist()[0] for p in tmp_path.rglob("*.parquet")]
    by_name = {r["submission"]: json.loads(r["hparams"]) for r in rows}
    assert by_name[spec]["lr@rest"] == 0.01 and not any("@" in k for k in by_name["adamw"])


def test_a_bad_grouping_stops_the_command_before_the_workload_is_set_up(tmp_path: Path) -> None:
    """Checked when the trial is prepared: cifar10 without its data would otherwise fail first, on the data."""
    res = CliRunner().invoke(main, ["run", "-w", "cifar10", "--data-dir", str(tmp_path / "none"), "-s",
                                    "torch.optim:Muon", "-o", "roles=hidden", "-o", "rest=torch.optim:AdamW", "-o",
                                    "bogus@rest=1", "--quiet", "--device", "cpu", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "AdamW takes no option bogus" in res.output, res.output
