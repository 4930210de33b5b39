"""A plain ``torch.optim.Optimizer`` subclass as a submission, with no wrapper file.

Its hyperparameters are the constructor's keyword arguments; the updater is built in one place,
:func:`construct`, so that a hook (parameter groups by role) can decide what ``params`` the class is handed.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from optbench.api import Capability, SubmissionSpec, TrialInfo
from optbench.errors import PluginError, UsageError
from optbench.plugins import groups, values
from optbench.plugins.groups import RESERVED, build
from optbench.plugins.wrapping import UpdaterWrapper

REQUIRED = values.REQUIRED  # a constructor keyword with no default: the user must give it with -o
_UNSET = object()  # a keyword left out of the call, so that the class uses its own default


def construct(cls: type, model: Any, kwargs: Mapping[str, Any], hparams: Mapping[str, Any], info: TrialInfo) -> Any:
    """The optimizer ``cls(params, **kwargs)`` over ``model``'s parameters: the single place a plain class is built.

    Args:
      cls: the optimizer class.
      model: the trial's model (the plain module).
      kwargs: the constructor keywords (the class's own hyperparameters, lists made tuples).
      hparams: all of the trial's hyperparameters (harness keys such as ``schedule`` included).
      info: the trial.
    """
    del info
    return build(cls, model, kwargs, hparams)  # model.parameters(), or groups by role (-o roles=... KEY@GROUP=...)


@dataclasses.dataclass(frozen=True)
class Keyword:
    """One constructor keyword as a hyperparameter.

    Attributes:
      default: the recorded default (JSON): an enum member's name; None for a default that is neither JSON nor an
        enum (heavyball's ``use_default`` sentinel), which then means "the class's own default".
      expect: what the key takes (:mod:`optbench.plugins.values`).
      enum: the enum class when the default is a member (values are given by member name).
      sentinel: the default is an object of the class's own: None leaves the keyword out of the call.
    """

    default: Any
    expect: values.Expect
    enum: type[enum.Enum] | None = None
    sentinel: bool = False

    def argument(self, value: Any) -> Any:
        """The constructor argument for hyperparameter value ``value`` (lists made tuples; :data:`_UNSET`: leave
        the keyword out)."""
        if self.sentinel and value is None:
            return _UNSET
        if self.enum is not None and isinstance(value, str):
            return self.enum[value]
        return tuple(value) if isinstance(value, list) else value


def _keyword(p: inspect.Parameter, annotation: Any) -> Keyword | None:
    """The :class:`Keyword` of constructor parameter ``p`` (None: it cannot be set from a command line: a
    tensor, a function or another object default with no annotation that says what else it takes)."""
    declared = values.from_annotation(annotation) if annotation is not p.empty else None
    default = p.default
    if default is p.empty:
        return Keyword(default=REQUIRED, expect=declared or values.ANY)
    if isinstance(default, enum.Enum):
        expect = values.Expect(kinds=frozenset({"str"}), choices=tuple(m.name for m in type(default)))
        return Keyword(default=default.name, expect=expect, enum=type(default))
    if isinstance(default, (bool, int, float, str, type(None), list, tuple)):
        shown = list(default) if isinstance(default, tuple) else default
        implied = values.from_default(shown, fixed_length=True)
        if declared is None or not values.accepts(shown, declared)[0]:  # an annotation the default breaks: both
            return Keyword(default=shown, expect=implied if declared is None else declared | implied)
        return Keyword(default=shown, expect=declared)
    if declared is None or callable(default) or hasattr(default, "shape"):
        return None  # tensors and functions cannot be set from the command line or stored as JSON
    return Keyword(default=None, expect=declared | values.Expect(kinds=frozenset({"none"})), sentinel=True)


def constructor_keywords(cls: type, *, name: str) -> dict[str, Keyword]:
    """The constructor's keywords after ``params`` that a command line can set, by name."""
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"submission {name!r}: cannot read the constructor signature: {exc}") from None
    params = list(sig.parameters.values())[1:]  # drop self
    if not params:
        raise PluginError(f"submission {name!r}: the optimizer constructor takes no parameters argument")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  # an annotation naming what is not importable here: use the raw ones
        hints = {}
    out = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kw = _keyword(p, hints.get(p.name, p.annotation))
        if kw is not None:
            out[p.name] = kw
    return out


def optimizer_submission(cls: type, *, name: str) -> SubmissionSpec:
    """A :class:`SubmissionSpec` for a plain ``torch.optim.Optimizer`` subclass.

    Its hyperparameters are the constructor's keyword arguments (defaults from the signature) plus ``schedule``
    (default ``constant``: the learning rate the class itself keeps) and, when a schedule is given, that schedule's
    keys (``-o schedule=cosine -o warmup_frac=0.05``, the built-ins' shape; see optbench/schedules.py). The updater
    is ``cls(model.parameters(), **hparams)`` (see :func:`construct`), wrapped in the schedule over the trial's
    step_hint. JSON lists become tuples, since torch optimizers take ``betas`` and the like as tuples. The keys
    ``roles``, ``ndim``, ``rest`` and ``KEY@GROUP`` hand the class parameter groups by role and the other parameters
    to a fallback class (optbench/plugins/groups.py).

    Args:
      cls: the optimizer class.
      name: its spec string, recorded as the submission name.
    Returns:
      The submission.
    """
    keywords = constructor_keywords(cls, name=name)
    defaults = {k: kw.default for k, kw in keywords.items()}
    own = dict(defaults)  # the constructor's keywords
    defaults.setdefault("schedule", "constant")
    for key, value in RESERVED.items():  # parameter groups by role (optbench.plugins.groups)
        defaults.setdefault(key, value)
    caps = detect(cls)

    def factory(model: Any, hparams: Mapping[str, Any], info: TrialInfo) -> Any:
        from optbench.schedules import Scheduled, from_hparams

        missing = [k for k, v in hparams.items() if v is REQUIRED]
        if missing:
            raise UsageError(f"submission {name!r} needs {', '.join(missing)} (set with --opt-arg KEY=VALUE)")
        kwargs = {k: keywords[k].argument(v) for k, v in hparams.items() if k in own}
        opt = construct(cls, model, {k: v for k, v in kwargs.items() if v is not _UNSET}, hparams, info)
        if Capability.EVAL_PARAMS in caps:
            opt.train()  # the schedule-free family starts in eval mode and refuses to step there
        if "schedule" not in own and hparams.get("schedule", "constant") != "constant":
            opt = Scheduled(opt, from_hparams(hparams, total_steps=info.step_hint))
        return ModeSwitched(opt) if Capability.EVAL_PARAMS in caps else opt

    def expects() -> dict[str, values.Expect]:
        others = {k: values.ANY for k in defaults if k not in own and k != "schedule"}  # groups.py checks those
        return {**others, **{k: kw.expect for k, kw in keywords.items()}}

    factory.plain_optimizer = True  # type: ignore[attr-defined]  # conformance tries a small lr grid on these
    factory.expects = expects  # type: ignore[attr-defined]  # what each -o value may be (optbench.plugins.values)
    factory.check_hparams = lambda hp: groups.check(cls, hp)  # type: ignore[attr-defined]  # groups by role, pre-set-up
    return SubmissionSpec(name=name, factory=factory, defaults=defaults, capabilities=caps,
                          paper=f"{cls.__module__}.{cls.__name__}")


def detect(cls: type) -> frozenset[Capability]:
    """What a plain class shows it needs, from its methods and signature (no instance is made):

    * ``train()`` and ``eval()`` methods (every library's schedule-free family): :attr:`Capability.EVAL_PARAMS`,
      trained in train mode, evaluated in eval mode (:class:`ModeSwitched`);
    * a ``step`` whose ``closure`` has no default (``torch.optim.LBFGS``, ``AdamWScheduleFreeClosure``):
      :attr:`Capability.CLOSURE`. A step that takes ``closure=None`` and raises without one is not detected: it
      must be wrapped in a submission that declares the capability;
    * ``create_graph`` or ``hutchinson`` in the class's own source (torch_optimizer's Adahessian names the option in
      its error, pytorch_optimizer's AdaHessian and SophiaH call ``compute_hutchinson_hessian`` in ``step``):
      :attr:`Capability.CREATE_GRAPH`. Only the class's own source is read, not its bases' (pytorch_optimizer's base
      class defines the Hutchinson estimate for every optimizer); where detection misses, ``--create-graph``
      declares it.
    """
    caps = set()
    if callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None)):
        caps.add(Capability.EVAL_PARAMS)
    try:
        closure = inspect.signature(cls.step).parameters.get("closure")
    except (TypeError, ValueError, AttributeError):
        closure = None
    if closure is not None and closure.default is inspect.Parameter.empty:
        caps.add(Capability.CLOSURE)
    try:
        source = inspect.getsource(cls).lower()
    except (OSError, TypeError):  # a class defined in a REPL or a compiled module: nothing to read
        source = ""
    if "create_graph" in source or "hutchinson" in source:
        caps.add(Capability.CREATE_GRAPH)
    return frozenset(caps)


class ModeSwitched(UpdaterWrapper):
    """A schedule-free-like optimizer (``train()``/``eval()``) as an updater with :attr:`Capability.EVAL_PARAMS`:
    it steps in train mode, and ``eval_params()`` puts it in eval mode (its averaged weights in the parameters)
    for the evaluation and back in train mode after; the harness times both switches, as any evaluation swap.
    Everything else is the optimizer's."""

    @contextmanager
    def eval_params(self) -> Iterator[None]:
        self.inner.eval()
        try:
            yield
        finally:
            self.inner.train()

    def step(self, closure: Any = None) -> Any:
        return self.inner.step(closure) if closure is not None else self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


def declared(loaded: Any, hparams: Mapping[str, Any], *, create_graph: bool) -> tuple[Any, dict[str, Any]]:
    """The trial's submission and hyperparameters with ``--create-graph`` applied: a plain class gets
    :attr:`Capability.CREATE_GRAPH`, and ``create_graph: true`` joins its hyperparameters, so that the trial is
    not the one run without it (an ``error`` recorded then is not "already recorded" now).

    Args:
      loaded: the :class:`~optbench.plugins.registry.Loaded` submission.
      hparams: its merged hyperparameters.
      create_graph: whether ``--create-graph`` was given.
    Raises:
      UsageError: ``--create-graph`` for a submission that is not a plain class (it declares its own capabilities).
    """
    sub = loaded.obj
    if not create_graph or Capability.CREATE_GRAPH in sub.capabilities:
        return loaded, dict(hparams)
    if not is_plain_optimizer(sub):
        raise UsageError(f"--create-graph is for plain optimizer classes (module:Attr); submission {loaded.name!r} "
                         "declares its own capabilities (Capability.CREATE_GRAPH)")
    obj = dataclasses.replace(sub, capabilities=sub.capabilities | {Capability.CREATE_GRAPH})
    return dataclasses.replace(loaded, obj=obj), {**hparams, "create_graph": True}


def is_plain_optimizer(sub: Any) -> bool:
    """Whether ``sub`` wraps a plain ``torch.optim.Optimizer`` class (see :func:`optimizer_submission`)."""
    return bool(getattr(getattr(sub, "factory", None), "plain_optimizer", False))
