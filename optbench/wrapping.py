"""The base of updaters that wrap another updater (weight averaging, Seesaw): the ``torch.optim.Optimizer``
interface forwarded to ``self.inner``, optional hooks included."""

from __future__ import annotations

from typing import Any


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
