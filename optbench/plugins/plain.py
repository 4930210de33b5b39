"""A plain ``torch.optim.Optimizer`` subclass as a submission, with no wrapper file.

Its hyperparameters are the constructor's keyword arguments; the updater is built in one place,
:func:`construct`, so that a hook (parameter groups by role) can decide what ``params`` the class is handed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from optbench.api import SubmissionSpec, TrialInfo
from optbench.errors import PluginError, UsageError
from optbench.plugins.groups import RESERVED, build

REQUIRED = object()  # a constructor keyword with no default: the user must give it with -o


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


def constructor_defaults(cls: type, *, name: str) -> dict[str, Any]:
    """The constructor's keywords after ``params`` with their defaults (:data:`REQUIRED` where there is none)."""
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"submission {name!r}: cannot read the constructor signature: {exc}") from None
    params = list(sig.parameters.values())[1:]  # drop self
    if not params:
        raise PluginError(f"submission {name!r}: the optimizer constructor takes no parameters argument")
    defaults: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = p.default
        if default is p.empty:
            default = REQUIRED
        elif isinstance(default, tuple):
            default = list(default)
        elif not isinstance(default, (int, float, str, bool, type(None), list)):
            continue  # tensors and other objects cannot be set from the command line or stored as JSON
        defaults[p.name] = default
    return defaults


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
    defaults = constructor_defaults(cls, name=name)
    own = dict(defaults)  # the constructor's keywords
    defaults.setdefault("schedule", "constant")
    for key, value in RESERVED.items():  # parameter groups by role (optbench.plugins.groups)
        defaults.setdefault(key, value)

    def factory(model: Any, hparams: Mapping[str, Any], info: TrialInfo) -> Any:
        from optbench.schedules import Scheduled, from_hparams

        missing = [k for k, v in hparams.items() if v is REQUIRED]
        if missing:
            raise UsageError(f"submission {name!r} needs {', '.join(missing)} (set with --opt-arg KEY=VALUE)")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items() if k in own}
        opt = construct(cls, model, kwargs, hparams, info)
        if "schedule" in own or hparams.get("schedule", "constant") == "constant":
            return opt
        return Scheduled(opt, from_hparams(hparams, total_steps=info.step_hint))

    factory.plain_optimizer = True  # type: ignore[attr-defined]  # conformance tries a small lr grid on these
    return SubmissionSpec(name=name, factory=factory, defaults=defaults, paper=f"{cls.__module__}.{cls.__name__}")


def is_plain_optimizer(sub: Any) -> bool:
    """Whether ``sub`` wraps a plain ``torch.optim.Optimizer`` class (see :func:`optimizer_submission`)."""
    return bool(getattr(getattr(sub, "factory", None), "plain_optimizer", False))
