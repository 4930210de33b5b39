"""Every ``-o`` value is checked before anything trains: against a plain class's constructor defaults and
annotations, and against a built-in's defaults; a mistake is one line naming key, what it takes and the value,
exit code 2, and no result file."""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optbench.cli import main
from optbench.engine.prepared import TrialConfig, prepare
from optbench.errors import UsageError
from optbench.plugins.plain import optimizer_submission
from optbench.plugins.registry import Loaded, Origin, load_submission, load_workload

ORIGIN = Origin(source="module", distribution="tests", version="0")
LINREG = load_workload("linreg")


def prepared(sub: Any, hparams: dict[str, Any]) -> Any:
    loaded = sub if isinstance(sub, Loaded) else Loaded(name=sub.name, obj=sub, origin=ORIGIN)
    return prepare(LINREG, loaded, TrialConfig(hparams=hparams), results_dir=Path("unused"))


REFUSED = [  # (submission, -o value, what the one line must say)
    ("torch.optim:Adam", "lr=true", "hyperparameter lr takes a float, got true"),
    ("torch.optim:Adam", "lr=abc", 'hyperparameter lr takes a float, got "abc"'),
    ("torch.optim:Adam", "lr=nan", 'hyperparameter lr takes a float, got "nan"'),  # not JSON: the text "nan"
    ("torch.optim:Adam", "lr=NaN", "hyperparameter lr must be finite, got NaN"),
    ("torch.optim:Adam", "eps=Infinity", "hyperparameter eps must be finite, got Infinity"),
    ("torch.optim:Adam", "lr=-1", "learning rate lr must be >= 0, got -1"),
    ("torch.optim:Adam", "lr=[0.1]", "hyperparameter lr takes a float, got [0.1]"),
    ("torch.optim:Adam", "betas=0.9", "hyperparameter betas takes a list of 2 floats, got 0.9"),
    ("torch.optim:Adam", "betas=[0.9,0.99,0.999]", "takes a list of 2 floats, got [0.9, 0.99, 0.999]"),
    ("torch.optim:Adam", "betas=[0.9,NaN]", "hyperparameter betas must be finite"),
    ("torch.optim:Adam", "amsgrad=1", "hyperparameter amsgrad takes a bool, got 1"),
    ("torch.optim:LBFGS", "max_iter=5.5", "hyperparameter max_iter takes an integer, got 5.5"),
    ("adamw", "lr=true", "hyperparameter lr takes a float, got true"),
    ("adamw", "beta1=high", 'hyperparameter beta1 takes a float, got "high"'),
    ("muon", "adam_lr=-0.1", "learning rate adam_lr must be >= 0, got -0.1"),
    ("tests/plugins/families.py:ModeSwitching", "beta=true", "hyperparameter beta takes a float, got true"),
]


@pytest.mark.parametrize(("spec", "value", "says"), REFUSED, ids=[f"{s}-{v}" for s, v, _ in REFUSED])
def test_a_bad_value_is_one_line_and_exit_2_before_anything_trains(results: Path, spec: str, value: str,
                                                                    says: str) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", spec, "-o", value, "--max-steps", "3", "--quiet",
                                    "--results-dir", str(results)])
    assert res.exit_code == 2, res.output
    assert says in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not list(results.rglob("*.parquet"))


ACCEPTED = [  # (submission, given, the value prepared)
    ("torch.optim:LBFGS", {"max_iter": 5.0}, {"max_iter": 5}),
    ("torch.optim:LBFGS", {"line_search_fn": "strong_wolfe"}, {"line_search_fn": "strong_wolfe"}),
    ("torch.optim:Adam", {"lr": 1, "weight_decay": 0.1}, {"lr": 1, "weight_decay": 0.1}),  # an int default: floats
    ("adamw_step", {"cooldown_frac": None, "decay_milestones": [0.3, 0.6, 0.9]},
     {"cooldown_frac": None, "decay_milestones": [0.3, 0.6, 0.9]}),  # None: the schedule's own; any length
    ("shampoo", {"precondition_frequency": 20}, {"precondition_frequency": 20}),  # an int default: a number
    ("dog", {"average": 4}, {"average": 4}),
]


@pytest.mark.parametrize(("spec", "given_", "want"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_a_good_value_is_prepared_as_the_class_takes_it(spec: str, given_: dict, want: dict) -> None:
    hp = prepared(load_submission(spec), given_).hparams
    assert {k: hp[k] for k in want} == want and all(type(hp[k]) is type(v) for k, v in want.items())


def test_annotations_widen_and_narrow_what_a_key_takes() -> None:
    """Real packages: pytorch_optimizer's betas take 2 or 3 items (``tuple[float, float] | tuple[float, float,
    float]``), its Literal a name of the literal, heavyball's sentinel defaults a bool."""
    po = pytest.importorskip("pytorch_optimizer")
    del po
    sf = load_submission("pytorch_optimizer:ScheduleFreeAdamW")
    assert prepared(sf, {"betas": [0.9, 0.99, 0.999]}).hparams["betas"] == [0.9, 0.99, 0.999]
    with pytest.raises(UsageError, match="takes a list of 2 or 3 floats, got \\[0.9\\]"):
        prepared(sf, {"betas": [0.9]})
    sophia = load_submission("pytorch_optimizer:SophiaH")
    assert prepared(sophia, {"hessian_distribution": "rademacher"}).hparams["hessian_distribution"] == "rademacher"
    with pytest.raises(UsageError, match="takes one of 'gaussian', 'rademacher', got \"uniform\""):
        prepared(sophia, {"hessian_distribution": "uniform"})
    pytest.importorskip("heavyball")
    hb = load_submission("heavyball:SFAdamW")
    assert prepared(hb, {"compile_step": False}).hparams["compile_step"] is False  # refused as unknown before
    with pytest.raises(UsageError, match="compile_step takes a bool or null, got 0.5"):
        prepared(hb, {"compile_step": 0.5})


class Mode(enum.Enum):
    FAST = 1
    SLOW = 2


_OWN_DEFAULT = object()


class Recording(torch.optim.SGD):
    """Records the keywords it was built with: an enum default, a sentinel default, a required keyword."""

    seen: dict[str, Any] = {}

    def __init__(self, params, lr: float, mode: Mode = Mode.FAST, fused: bool = _OWN_DEFAULT,  # type: ignore[assignment]
                 clip=_OWN_DEFAULT):
        Recording.seen = {"mode": mode, "fused": fused, "clip": clip}
        super().__init__(params, lr=lr)


def built(hparams: dict[str, Any]) -> dict[str, Any]:
    prep = prepared(optimizer_submission(Recording, name="rec"), hparams)
    prep.submission.obj.create(torch.nn.Linear(2, 1), prep.hparams, prep.info)
    return Recording.seen


def test_enum_sentinel_and_required_keywords() -> None:
    sub = optimizer_submission(Recording, name="rec")
    assert {k: sub.defaults[k] for k in ("mode", "fused")} == {"mode": "FAST", "fused": None}
    assert "clip" not in sub.defaults  # an object default with no annotation: nothing says what it takes
    with pytest.raises(UsageError, match="submission 'rec' needs lr"):
        prepared(sub, {})
    assert built({"lr": 0.1}) == {"mode": Mode.FAST, "fused": _OWN_DEFAULT, "clip": _OWN_DEFAULT}
    seen = built({"lr": 0.1, "mode": "SLOW", "fused": False})
    assert seen["mode"] is Mode.SLOW and seen["fused"] is False
    with pytest.raises(UsageError, match="hyperparameter mode takes one of 'FAST', 'SLOW', got \"MEDIUM\""):
        prepared(sub, {"lr": 0.1, "mode": "MEDIUM"})
    with pytest.raises(UsageError, match="hyperparameter fused takes a bool or null, got \"yes\""):
        prepared(sub, {"lr": 0.1, "fused": "yes"})


# ------------------------------------------------------------------------------------- random signatures
DEFAULTS = st.one_of(st.booleans(), st.integers(-5, 5), st.floats(-10, 10, allow_nan=False), st.text(max_size=3),
                     st.none(), st.lists(st.floats(0, 1), min_size=1, max_size=3).map(tuple))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=4))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return all(map(_finite, v)) if isinstance(v, list) else True


def oracle(defaults: dict[str, Any], key: str, value: Any) -> bool:
    """Whether ``value`` is good for the unannotated keyword ``key`` of a class with ``defaults`` (the rule,
    written apart); a negative default lr that ``value`` does not replace is refused too."""
    lr = value if key == "lr" else defaults.get("lr")
    if not _finite(value) or (_number(lr) and lr < 0):
        return False
    default = defaults[key]
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return _number(value)
    if isinstance(default, str):
        return isinstance(value, str)
    return isinstance(value, list) and len(value) == len(default) and all(map(_number, value))


def plain_class(defaults: dict[str, Any]) -> type:
    """A torch optimizer class whose constructor takes ``defaults`` as keywords (no annotations)."""
    args = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
    src = f"def __init__(self, params, {args}):\n    torch.optim.SGD.__init__(self, params, lr=0.1)\n"
    scope: dict[str, Any] = {"torch": torch}
    exec(src, scope)  # noqa: S102  # a signature made up by hypothesis
    return type("Random", (torch.optim.SGD,), {"__init__": scope["__init__"]})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defaults=st.dictionaries(st.sampled_from(["lr", "beta", "steps", "mode", "shape"]), DEFAULTS, min_size=1),
       data=st.data())
def test_random_values_against_random_signatures(defaults: dict[str, Any], data: st.DataObject) -> None:
    """Never a traceback: a value is either prepared (and the class is built with it) or one UsageError, exactly
    as the rule says; a refused value never reaches a trial."""
    key = data.draw(st.sampled_from(sorted(defaults)))
    value = data.draw(VALUES)
    sub = optimizer_submission(plain_class(defaults), name="random")
    good = oracle(defaults, key, value)
    try:
        prep = prepared(sub, {key: value})
    except UsageError as exc:
        assert not good, f"{key}={value!r} refused: {exc}"
        assert (key in str(exc) or "lr" in str(exc)) and "\n" not in str(exc)
        return
    assert good, f"{key}={value!r} (default {defaults[key]!r}) was accepted"
    json.dumps(prep.hparams[key])
    sub.create(torch.nn.Linear(2, 1), prep.hparams, prep.info)


ANNOTATED = {  # keyword -> (annotation, default, the rule for a value, written apart)
    "lr": ("float", 0.1, lambda v: _number(v) and v >= 0),
    "steps": ("int", 3, lambda v: _number(v) and float(v).is_integer()),
    "flag": ("bool", True, lambda v: isinstance(v, bool)),
    "clip": ("Optional[float]", None, lambda v: v is None or _number(v)),
    "betas": ("tuple[float, float]", (0.9, 0.99), lambda v: isinstance(v, list) and len(v) == 2 and
              all(map(_number, v))),
    "kind": ("Literal['a', 'b']", "a", lambda v: v in ("a", "b")),
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.sets(st.sampled_from(sorted(ANNOTATED)), min_size=1), data=st.data())
def test_random_values_against_annotated_signatures(keys: set[str], data: st.DataObject) -> None:
    """As above, for annotated keywords: the annotation decides (an int takes integral floats, made ints)."""
    args = ", ".join(f"{k}: {ANNOTATED[k][0]} = {ANNOTATED[k][1]!r}" for k in sorted(keys))
    scope: dict[str, Any] = {"torch": torch, "Optional": Optional, "Literal": Literal}
    exec(f"def __init__(self, params, {args}):\n    torch.optim.SGD.__init__(self, params, lr=0.1)\n", scope)  # noqa: S102
    cls = type("Annotated", (torch.optim.SGD,), {"__init__": scope["__init__"]})
    key = data.draw(st.sampled_from(sorted(keys)))
    value = data.draw(VALUES)
    good = _finite(value) and ANNOTATED[key][2](value)
    sub = optimizer_submission(cls, name="annotated")
    try:
        prep = prepared(sub, {key: value})
    except UsageError as exc:
        assert not good, f"{key}={value!r} refused: {exc}"
        return
    assert good, f"{key}={value!r} was accepted"
    assert key != "steps" or type(prep.hparams[key]) is int
    sub.create(torch.nn.Linear(2, 1), prep.hparams, prep.info)
