"""Exact-value tests of optbench.engine.prepared's validation, written against its mutation-testing survivors.

Every bound is checked on both sides of its edge with the exact one-line message, so that an off-by-one, a flipped
comparison or a changed message is caught. No training: only the real plugins linreg/adamw are loaded.
"""

from __future__ import annotations

import math
import json
import re
from pathlib import Path

import pytest

from optbench.engine import prepared as P
from optbench.api import Budget, EvalPeriod
from optbench.errors import UsageError
from optbench.engine.prepared import TrialConfig, bounded_float, bounded_int, prepare, text
from optbench.plugins.registry import load_submission, load_workload


def _raises(msg: str):
    """pytest.raises for a UsageError whose message is exactly ``msg``."""
    return pytest.raises(UsageError, match="^" + re.escape(msg) + "$")


@pytest.fixture(scope="module")
def plugins():
    return load_workload("linreg"), load_submission("adamw")


def _prep(plugins, tmp_path: Path | None = None, **cfg):
    w, s = plugins
    return prepare(w, s, TrialConfig(**cfg), results_dir=tmp_path or Path("res"))


# ------------------------------------------------------------------------------------------------- constants
def test_bounds_constants():
    assert (P.MAX_SEED, P.MAX_STEPS, P.MAX_BATCH) == (2**63 - 1, 2**40, 2**31 - 1)
    assert (P.MAX_SECONDS, P.MAX_WARMUP_STEPS, P.MAX_PLANNED_TRIALS, P.MAX_NAME) == (1e9, 10**6, 100_000, 200)


# ------------------------------------------------------------------------------------------------- bounded_int
def test_bounded_int_edges():
    assert bounded_int(1, what="x", low=1, high=3) == 1
    assert bounded_int(3, what="x", low=1, high=3) == 3
    with _raises("x must be an integer >= 1 and <= 3, got 0"):
        bounded_int(0, what="x", low=1, high=3)
    with _raises("x must be an integer >= 1 and <= 3, got 4"):
        bounded_int(4, what="x", low=1, high=3)


def test_bounded_int_floats():
    v = bounded_int(32.0, what="x", low=1, high=100)
    assert v == 32 and type(v) is int
    assert type(bounded_int(1e3, what="x", low=1, high=10**4)) is int
    # an integral float is bounded after conversion (4.0 > 3)
    with _raises("x must be an integer >= 1 and <= 3, got 4"):
        bounded_int(4.0, what="x", low=1, high=3)
    for bad in (2.5, math.nan, math.inf, -math.inf):
        with _raises(f"x must be an integer, got {bad!r}"):
            bounded_int(bad, what="x", low=0, high=10)


@pytest.mark.parametrize("bad", [True, False, "3", [3], None])
def test_bounded_int_rejects_non_numbers(bad):
    with _raises(f"x must be an integer, got {bad!r}"):
        bounded_int(bad, what="x", low=0, high=10)


# ----------------------------------------------------------------------------------------------- bounded_float
def test_bounded_float_defaults_open_low():
    assert bounded_float(1e9, what="t") == 1e9
    v = bounded_float(2, what="t")
    assert v == 2.0 and type(v) is float
    assert bounded_float(5e-324, what="t") == 5e-324
    with _raises("t must be a finite number > 0 and <= 1e+09, got 0.0"):
        bounded_float(0, what="t")
    with _raises("t must be a finite number > 0 and <= 1e+09, got -1.0"):
        bounded_float(-1, what="t")
    with _raises("t must be a finite number > 0 and <= 1e+09, got 1000000000.0001"):
        bounded_float(1e9 + 1e-4, what="t")
    for bad in (math.nan, math.inf, -math.inf):
        with _raises(f"t must be a finite number > 0 and <= 1e+09, got {bad!r}"):
            bounded_float(bad, what="t")


def test_bounded_float_closed_low_and_custom_range():
    assert bounded_float(1.0, what="f", low=1.0, high=2.0, low_open=False) == 1.0
    assert bounded_float(2.0, what="f", low=1.0, high=2.0, low_open=False) == 2.0
    with _raises("f must be a finite number >= 1 and <= 2, got 0.5"):
        bounded_float(0.5, what="f", low=1.0, high=2.0, low_open=False)
    with _raises("f must be a finite number > 1 and <= 2, got 1.0"):
        bounded_float(1.0, what="f", low=1.0, high=2.0)
    with _raises("f must be a finite number > 1 and <= 2, got 2.5"):
        bounded_float(2.5, what="f", low=1.0, high=2.0)
    assert bounded_float(1.5, what="f", low=1.0, high=2.0) == 1.5


@pytest.mark.parametrize("bad", [True, False, "1", None, [1.0]])
def test_bounded_float_rejects_non_numbers(bad):
    with _raises(f"t must be a number, got {bad!r}"):
        bounded_float(bad, what="t")


# ---------------------------------------------------------------------------------------------------- text
def test_text_accepts_and_bounds():
    assert text("a", what="n") == "a"
    assert text("x" * 200, what="n") == "x" * 200
    assert text(" é ", what="n") == " é "
    long = "y" * 201
    with _raises(f"n must be at most 200 printable characters, got {long[:60]!r}..."):
        text(long, what="n")
    with _raises("n must be at most 200 printable characters, got 'a\\x1fb'..."):
        text("a\x1fb", what="n")
    assert text("a b", what="n") == "a b"  # chr(32) is printable


@pytest.mark.parametrize("bad", ["", "   ", None, 3, b"x"])
def test_text_rejects_empty_and_non_strings(bad):
    with _raises(f"n must be a non-empty name, got {bad!r}"):
        text(bad, what="n")


def test_text_rejects_surrogates():
    with _raises("n is not valid UTF-8: 'a\\\\udcff'"):
        text("a\udcff", what="n")


# ----------------------------------------------------------------------------------------- sizes and devices
def test_resolve_size(plugins):
    w = plugins[0].obj
    assert P.resolve_size(w, None).name == "tiny"
    assert P.resolve_size(w, "").name == "tiny"
    assert P.resolve_size(w, "large").name == "large"
    with _raises("workload 'linreg' has no size 'huge'; sizes: tiny, small, large"):
        P.resolve_size(w, "huge")


def test_resolve_device():
    import torch

    assert P.resolve_device("cpu") == "cpu"
    assert P.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", ""):
        with _raises(f"unknown device {bad!r}; use cpu, cuda, cuda:N or auto"):
            P.resolve_device(bad)
    with _raises("unsupported device 'meta'; use cpu, cuda, cuda:N or auto"):
        P.resolve_device("meta")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with _raises("device 'cuda' requested but no CUDA GPU is available; use --device cpu"):
                P.resolve_device(name)


# -------------------------------------------------------------------------------------------------- prepare
def test_prepare_defaults(plugins, tmp_path):
    t = _prep(plugins, tmp_path)
    assert t.size.name == "tiny" and t.target == 0.1
    assert t.budget == Budget(max_steps=3000, max_seconds=60.0)
    assert t.period == EvalPeriod(steps=50, seconds=None)
    assert t.batch_size == 32 and t.device == "cpu"
    assert (t.seed, t.study, t.trial) == (0, "seed0", "0")
    assert t.timeout is None and t.warmup_steps == 0 and t.divergence_factor == 100.0
    assert t.compile is False and t.checkpoint is None and t.data_dir is None
    assert t.results_dir == tmp_path
    assert t.hparams == dict(plugins[1].obj.defaults)
    assert t.hparams_json == '{"beta1": 0.9, "beta2": 0.999, "decay_floor": 0.1, "eps": 1e-08, "lr": 0.01, ' \
        '"schedule": "cosine", "warmup_frac": 0.05, "weight_decay": 0.0}'
    assert t.info.workload == "linreg" and t.info.size == "tiny" and t.info.step_hint == 1500
    assert t.info.max_steps == 3000 and t.info.batch_size == 32 and t.info.device == "cpu" and t.info.seed == 0
    assert t.title == "linreg/tiny adamw seed 0"


def test_prepare_overrides(plugins, tmp_path):
    t = _prep(plugins, tmp_path, size="small", hparams={"lr": 0.5}, seed=7, study="s", trial="t1", max_steps=9,
              max_seconds=2.5, eval_every_steps=3, batch_size=5, timeout=30, warmup_steps=10**6,
              divergence_factor=1.5, compile=1, checkpoint=tmp_path / "ck", data_dir=tmp_path / "d")
    assert t.size.name == "small" and t.hparams["lr"] == 0.5 and '"lr": 0.5' in t.hparams_json
    assert t.budget == Budget(max_steps=9, max_seconds=2.5) and t.info.max_steps == 9
    assert t.period == EvalPeriod(steps=3, seconds=None)
    assert (t.seed, t.study, t.trial, t.batch_size, t.timeout) == (7, "s", "t1", 5, 30.0)
    assert t.warmup_steps == 10**6 and t.divergence_factor == 1.5 and t.compile is True
    assert t.checkpoint == tmp_path / "ck" and t.data_dir == tmp_path / "d"
    assert t.info.seed == 7 and t.info.size == "small" and t.info.step_hint == 8000
    assert t.title == "linreg/small adamw seed 7"


def test_prepare_partial_overrides(plugins):
    t = _prep(plugins, max_steps=4)
    assert t.budget == Budget(max_steps=4, max_seconds=60.0)
    t = _prep(plugins, max_seconds=1)
    assert t.budget == Budget(max_steps=3000, max_seconds=1.0)
    t = _prep(plugins, eval_every_seconds=0.5)
    assert t.period == EvalPeriod(steps=None, seconds=0.5)
    t = _prep(plugins, eval_every_steps=7, eval_every_seconds=2)
    assert t.period == EvalPeriod(steps=7, seconds=2.0)


def test_prepare_batch_size_sources(plugins):
    w, s = plugins
    assert "batch_size" not in s.obj.defaults
    # --batch-size wins over the size's default
    assert _prep(plugins, batch_size=2**31 - 1).batch_size == 2**31 - 1
    assert _prep(plugins, batch_size=1).batch_size == 1
    with _raises("--batch-size must be an integer >= 1 and <= 2147483647, got 0"):
        _prep(plugins, batch_size=0)
    with _raises("--batch-size must be an integer >= 1 and <= 2147483647, got 2147483648"):
        _prep(plugins, batch_size=2**31)


@pytest.mark.parametrize(("cfg", "msg"), [
    ({"seed": -1}, "--seed must be an integer >= 0 and <= 9223372036854775807, got -1"),
    ({"seed": 2**63}, "--seed must be an integer >= 0 and <= 9223372036854775807, got 9223372036854775808"),
    ({"study": ""}, "--study must be a non-empty name, got ''"),
    ({"trial": "\udc80"}, "trial id is not valid UTF-8: '\\\\udc80'"),
    ({"size": "nope"}, "workload 'linreg' has no size 'nope'; sizes: tiny, small, large"),
    ({"device": "gpu"}, "unknown device 'gpu'; use cpu, cuda, cuda:N or auto"),
    ({"max_steps": 0}, "--max-steps must be an integer >= 1 and <= 1099511627776, got 0"),
    ({"max_steps": 2**40 + 1}, "--max-steps must be an integer >= 1 and <= 1099511627776, got 1099511627777"),
    ({"max_seconds": 0}, "--max-seconds must be a finite number > 0 and <= 1e+09, got 0.0"),
    ({"max_seconds": math.nan}, "--max-seconds must be a finite number > 0 and <= 1e+09, got nan"),
    ({"eval_every_steps": 0}, "--eval-every must be an integer >= 1 and <= 1099511627776, got 0"),
    ({"eval_every_steps": 2**40 + 1}, "--eval-every must be an integer >= 1 and <= 1099511627776, got 1099511627777"),
    ({"eval_every_seconds": 0},
     "the evaluation period in seconds must be a finite number > 0 and <= 1e+09, got 0.0"),
    ({"timeout": 0}, "--timeout must be a finite number > 0 and <= 1e+09, got 0.0"),
    ({"timeout": math.inf}, "--timeout must be a finite number > 0 and <= 1e+09, got inf"),
    ({"warmup_steps": -1}, "--warmup-steps must be an integer >= 0 and <= 1000000, got -1"),
    ({"warmup_steps": 10**6 + 1}, "--warmup-steps must be an integer >= 0 and <= 1000000, got 1000001"),
    ({"divergence_factor": 1}, "divergence factor must be a finite number > 1 and <= 1e+300, got 1.0"),
    ({"divergence_factor": 0.999}, "divergence factor must be a finite number > 1 and <= 1e+300, got 0.999"),
    ({"divergence_factor": 1e301}, "divergence factor must be a finite number > 1 and <= 1e+300, got 1e+301"),
])
def test_prepare_rejects(plugins, cfg, msg):
    with _raises(msg):
        _prep(plugins, **cfg)


def test_prepare_edges_accepted(plugins):
    t = _prep(plugins, seed=2**63 - 1, max_steps=2**40, eval_every_steps=2**40, max_seconds=1e9, timeout=1e9,
              divergence_factor=1e300, study="x" * 200)
    assert t.seed == 2**63 - 1 and t.budget.max_steps == 2**40 and t.period.steps == 2**40
    assert t.budget.max_seconds == 1e9 and t.timeout == 1e9 and t.divergence_factor == 1e300
    assert t.study == "x" * 200 and t.warmup_steps == 0


def test_prepare_checks_hyperparameters(plugins):
    with pytest.raises(UsageError, match="momentum"):
        _prep(plugins, hparams={"momentum": 0.9})
    with pytest.raises(UsageError, match="^hyperparameters"):
        _prep(plugins, hparams={"lr": "\udc80"})


def test_prepare_checks_plugin_names(plugins):
    from dataclasses import replace

    w, s = plugins
    with _raises("workload name is not valid UTF-8: 'a\\\\udc80'"):
        prepare(replace(w, name="a\udc80"), s, TrialConfig(), results_dir=Path("r"))
    with _raises("submission name must be a non-empty name, got ''"):
        prepare(w, replace(s, name=""), TrialConfig(), results_dir=Path("r"))


def test_batch_size_from_hyperparameters(plugins):
    from dataclasses import replace

    w, s = plugins
    sub = replace(s, obj=_WithBatch(s.obj))
    t = prepare(w, sub, TrialConfig(hparams={"batch_size": 8.0}), results_dir=Path("r"))
    assert t.batch_size == 8 and type(t.batch_size) is int
    assert prepare(w, sub, TrialConfig(hparams={"batch_size": 8}, batch_size=3), results_dir=Path("r")).batch_size == 3
    assert prepare(w, sub, TrialConfig(), results_dir=Path("r")).batch_size == 32  # None: the size's own
    with _raises("hyperparameter batch_size must be an integer >= 1 and <= 2147483647, got 0"):
        prepare(w, sub, TrialConfig(hparams={"batch_size": 0}), results_dir=Path("r"))
    with _raises("hyperparameter batch_size must be an integer >= 1 and <= 2147483647, got 2147483648"):
        prepare(w, sub, TrialConfig(hparams={"batch_size": 2**31}), results_dir=Path("r"))


class _WithBatch:
    """adamw with a ``batch_size`` hyperparameter (default None: the size decides)."""

    def __init__(self, inner):
        self._inner = inner
        self.defaults = {**inner.defaults, "batch_size": None}

    def __getattr__(self, name):
        return getattr(self._inner, name)


# ------------------------------------------------------------------------------------- identity and pickling
def test_identity(plugins):
    base = _prep(plugins)
    ident = base.identity()
    assert re.fullmatch(r"[0-9a-f]{32}", ident) and ident == _prep(plugins).identity()
    import hashlib
    import json

    key = json.dumps(["linreg", "tiny", "adamw", "seed0", "0", 0, base.hparams_json, 3000, 60.0, 0.1])
    assert ident == hashlib.sha256(key.encode()).hexdigest()[:32]
    others = [_prep(plugins, size="small"), _prep(plugins, study="b"), _prep(plugins, trial="1"),
              _prep(plugins, seed=1, study="seed0"), _prep(plugins, hparams={"lr": 1.0}),
              _prep(plugins, max_steps=5), _prep(plugins, max_seconds=5), _prep(plugins, target=0.2)]
    assert len({ident, *(o.identity() for o in others)}) == 1 + len(others)
    assert _prep(plugins, timeout=5, warmup_steps=3).identity() == ident  # not part of the identity


def test_a_config_travels_as_json_and_prepares_to_the_same_trial(plugins, tmp_path):
    # jobs reach pool workers, torchrun ranks and cluster tasks as JSON (no pickle): the config must come back equal
    # and prepare to the same trial
    cfg = TrialConfig(size="small", seed=3, hparams={"lr": 0.2}, timeout=9, warmup_steps=2,
                      checkpoint=tmp_path / "c", batch_size=4, data_dir=tmp_path, target=0.5, varies=("lr",),
                      study_kind="tune", full_budget=True)
    back = TrialConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg
    w, s = plugins
    t, u = prepare(w, s, cfg, results_dir=tmp_path), prepare(w, s, back, results_dir=tmp_path)
    assert t.identity() == u.identity() and t.title == u.title and u.size.target == 0.5


# ----------------------------------------------------------------------------------------- destination / data
def test_check_destination(plugins, tmp_path):
    t1 = _prep(plugins, tmp_path)
    t2 = _prep(plugins, tmp_path, size="small")
    root = tmp_path / "out"
    P.check_destination(root, [t1, t1, t2])
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "linreg-small", "linreg-small/adamw", "linreg-tiny", "linreg-tiny/adamw"]
    P.check_destination(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "blk").mkdir()
    (tmp_path / "blk" / "linreg-tiny").write_text("a file")
    with pytest.raises(UsageError, match="linreg-tiny"):
        P.check_destination(tmp_path / "blk", [t1])


def test_check_destination_clears_stale_temporaries(tmp_path):
    from optbench.store.fsutil import temporary_name

    dead = tmp_path / temporary_name("r.parquet", pid=2**22 + 12345)  # above Linux's pid_max: never alive
    live = tmp_path / temporary_name("r.parquet")  # ours: a live writer's, kept
    dead.write_text("left by a killed writer")
    live.write_text("being written")
    P.check_destination(tmp_path)
    assert not dead.exists() and live.exists()


def test_check_data_without_dataset(plugins):
    assert P.check_data(plugins[0].obj.sizes["tiny"], None) is None


def test_check_data_names_dataset_and_folder(plugins, tmp_path, monkeypatch):
    from dataclasses import replace

    from optbench.errors import DataMissingError

    monkeypatch.setenv("OPTBENCH_DATA", str(tmp_path / "env"))  # the default must not be what is checked
    size = replace(plugins[0].obj.sizes["tiny"], dataset="cifar10")
    msg = (f"dataset 'cifar10' is not prepared in {tmp_path / 'given' / 'cifar10'}; prepare it with: "
           f"optbench data prepare cifar10 --data-dir {tmp_path / 'given'}")
    with pytest.raises(DataMissingError, match="^" + re.escape(msg) + "$"):
        P.check_data(size, tmp_path / "given")
