"""Wrapping: the base of updaters that wrap another updater (weight averaging, Seesaw), with the
``torch.optim.Optimizer`` interface forwarded to ``self.inner``, and submissions widened to every schedule key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from optbench.api import Submission, SubmissionSpec
from optbench.schedules import KEY_DEFAULTS


class UpdaterWrapper:
    """Forwards ``param_groups``, ``state``, ``zero_grad`` and any other attribute (``batch_size``,
    ``eval_params``...) to the wrapped updater ``inner``; subclasses override ``step`` and the state dict."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    @property
    def state(self) -> Any:
        return self.inner.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (during unpickling/copying): no infinite recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_schedule_keys(base: Submission, *, name: str, defaults: Mapping[str, Any] | None = None) -> SubmissionSpec:
    """``base`` accepting every schedule hyperparameter (None: the schedule's own default), with ``defaults`` on
    top: e.g. the step-decay twin of a Seesaw run."""
    extra = {k: None for k in KEY_DEFAULTS if k not in base.defaults}
    return SubmissionSpec(
        name=name, factory=base.create, defaults={**base.defaults, **extra, **(defaults or {})},
        capabilities=frozenset(base.capabilities), search_space_file=getattr(base, "search_space_file", None),
        paper=getattr(base, "paper", ""),
    )


def derived(loaded: Any, obj: Any, *, name: str) -> Any:
    """A :class:`optbench.plugins.registry.Loaded` of ``obj`` (a plugin made from ``loaded``'s) recorded as ``name``, with
    ``loaded``'s origin (package and version, or file hash), so a derived submission's results say where it came
    from. (A copy of ``loaded``: this module needs no import of the registry, which builds plain classes on
    :class:`UpdaterWrapper`.)"""
    return dataclasses.replace(loaded, name=name, obj=obj)
