"""Parameter groups by role for plain optimizer classes, set with ``-o`` (no wrapper file).

Three keys every plain class takes (unless its constructor has a keyword of that name) and one key syntax::

    -o roles=hidden                  the roles the class gets (comma-separated; default all: no groups at all)
    -o ndim=2                        ... only their tensors of this many dimensions (torch.optim.Muon takes 2-D only)
    -o rest=torch.optim:AdamW        the fallback class for every other parameter (module:Attr)
    -o KEY@GROUP=VALUE               a group-level option: GROUP is a role (hidden, embedding, head, norm_bias), whose
                                     parameter group gets KEY in whichever class holds it, or ``rest``, the fallback
                                     class's constructor keyword

The class is then built over one parameter group per role (``{"params": [...], KEY: VALUE}``), the fallback over the
others, and both step, zero their gradients and save their state as one updater (:class:`Combined`). Without any of
these keys the class gets ``model.parameters()`` exactly as before. ``@`` cannot clash with ``NAME.key`` (a key
for one submission of a command): ``torch.optim:Muon.lr@hidden=0.02`` is ``lr@hidden`` for ``torch.optim:Muon``.

Every key is checked when the trial is prepared, before any set-up (:func:`check`), and again when the updater is
built: an unknown role or key (one the class's constructor does not take, unless it takes ``**kwargs``: torch keeps
any key of a parameter group, and pytorch_optimizer's Muon needs ``use_muon``) is one :class:`UsageError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optbench.api import Role
from optbench.errors import UsageError
from optbench.plugins.hparams import split_group_key
from optbench.plugins.roles import by_role

ALL = "all"
REST = "rest"
RESERVED: Mapping[str, Any] = {"roles": ALL, "ndim": None, "rest": None}  # the keys' defaults
ROLE_NAMES = tuple(r.value for r in Role)


@dataclass(frozen=True, kw_only=True)
class Grouping:
    """The grouping asked for by a trial's hyperparameters (see the module docstring)."""

    roles: frozenset[Role]
    ndim: int | None
    rest: str | None
    options: Mapping[str, Mapping[str, Any]]  # group ("hidden"... or "rest") -> {key: value}

    @property
    def active(self) -> bool:
        return self.roles != frozenset(Role) or self.ndim is not None or bool(self.options)

    def takes(self, role: Role, p: Any) -> bool:
        """Whether the main class gets parameter ``p`` of role ``role``."""
        return role in self.roles and (self.ndim is None or p.dim() == self.ndim)


def _roles(value: Any) -> frozenset[Role]:
    parts = value if isinstance(value, list) else str(value).split(",")
    names = [str(p).strip() for p in parts if str(p).strip()]
    if names == [ALL]:
        return frozenset(Role)
    bad = [n for n in names if n not in ROLE_NAMES]
    if bad or not names:
        raise UsageError(f"-o roles={value!r}: expected roles among {', '.join(ROLE_NAMES)} (comma-separated) or all")
    return frozenset(Role(n) for n in names)


def grouping(hparams: Mapping[str, Any], *, reserved: Mapping[str, Any] = RESERVED) -> Grouping:
    """The :class:`Grouping` of ``hparams`` (group keys checked for their GROUP; KEYs are checked by :func:`build`).

    Args:
      hparams: the trial's hyperparameters.
      reserved: the grouping keys this class takes (those its constructor does not take itself).
    """
    roles = _roles(hparams.get("roles", ALL)) if "roles" in reserved else frozenset(Role)
    ndim = hparams.get("ndim") if "ndim" in reserved else None
    if ndim is not None and (isinstance(ndim, bool) or not isinstance(ndim, int) or ndim < 1):
        raise UsageError(f"-o ndim={ndim!r}: expected a whole number of dimensions >= 1 (2 for matrices)")
    rest = hparams.get("rest") if "rest" in reserved else None
    if rest is not None and (not isinstance(rest, str) or ":" not in rest):
        raise UsageError(f"-o rest={rest!r}: expected an optimizer class as module:Attr")
    options: dict[str, dict[str, Any]] = {}
    for key, value in hparams.items():
        base, group = split_group_key(key)
        if group is not None:
            options.setdefault(group, {})[base] = value
    out = Grouping(roles=roles, ndim=ndim, rest=rest, options=options)
    if REST in options and rest is None:
        raise UsageError("-o KEY@rest=VALUE sets the fallback class's options; name the class with -o rest=module:Attr")
    if rest is None and (out.roles != frozenset(Role) or ndim is not None):
        left = ", ".join(r.value for r in Role if r not in out.roles) or "the other dimensions"
        raise UsageError(f"-o roles/ndim leave {left} without an optimizer; name one with -o rest=torch.optim:AdamW")
    return out


def accepts(cls: type) -> tuple[frozenset[str], bool]:
    """The keyword names ``cls``'s constructor takes after ``params``, and whether it also takes ``**kwargs``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, params
    named = frozenset(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _check_keys(cls: type, keys: Mapping[str, Any], *, where: str) -> None:
    named, any_key = accepts(cls)
    unknown = sorted(k for k in keys if k not in named)
    if unknown and not any_key:
        raise UsageError(f"{where}: {cls.__name__} takes no option {', '.join(unknown)}; it takes: "
                         f"{', '.join(sorted(named)) or '(none)'}")


def fallback_class(spec: str) -> type:
    """The optimizer class named by ``-o rest=module:Attr``; anything else is a :class:`UsageError`.

    Imported as the registry imports ``module:Attr`` (:func:`optbench.plugins.loading.import_attr`), not through the
    registry itself (which builds plain classes with this module: a cycle); a fallback is a library's class
    (``torch.optim:AdamW``), so module specs are enough.
    """
    import torch

    from optbench.errors import PluginError
    from optbench.plugins.loading import import_attr

    module_name, _, attr = spec.partition(":")
    try:
        obj = import_attr(module_name, attr, spec)
    except PluginError as exc:  # an unimportable or missing name is the user's to fix, in one line
        raise UsageError(f"-o rest={spec}: cannot load it ({exc})") from None
    if not (inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)):
        raise UsageError(f"-o rest={spec}: not a torch.optim.Optimizer subclass")
    return obj


def _param_groups(model: Any, g: Grouping, *, main: bool) -> list[dict[str, Any]]:
    """One group per role with parameters, for the main class (``main``) or the fallback, with the role's options."""
    out = []
    for role, params in by_role(model).items():
        mine = [p for p in params if g.takes(role, p) == main]
        if mine:
            out.append({"params": mine, **g.options.get(role.value, {})})
    return out


def check(cls: type, hparams: Mapping[str, Any]) -> tuple[Grouping, type | None]:
    """The grouping ``hparams`` ask of ``cls``, and the fallback class, with every role, group and key checked.

    Needs no model: the harness runs it when it prepares a trial (through the plain submission's
    ``factory.check_hparams``), so a mistake stops the command before any workload is set up or any trial trains.

    Raises:
      UsageError: an unknown role, group, key or fallback class.
    """
    named, _ = accepts(cls)
    g = grouping(hparams, reserved={k: v for k, v in RESERVED.items() if k not in named})
    if not g.active:
        return g, None
    where = f"-o KEY@GROUP for {cls.__name__}"
    for group in g.options:
        if group != REST and group not in ROLE_NAMES:
            raise UsageError(f"{where}: no group {group!r}; groups: {', '.join(ROLE_NAMES)}, {REST}")
    rest_cls = fallback_class(g.rest) if g.rest is not None else None
    for role in g.roles:
        _check_keys(cls, g.options.get(role.value, {}), where=f"-o KEY@{role.value}")
    if rest_cls is not None:
        spilled = set(Role) if g.ndim is not None else set(Role) - g.roles  # roles the fallback may hold
        for role in spilled:
            _check_keys(rest_cls, g.options.get(role.value, {}), where=f"-o KEY@{role.value}")
        _check_keys(rest_cls, g.options.get(REST, {}), where=f"-o KEY@{REST}")
    return g, rest_cls


def build(cls: type, model: Any, kwargs: Mapping[str, Any], hparams: Mapping[str, Any]) -> Any:
    """``cls`` over ``model``'s parameters as the trial's grouping keys ask (see the module docstring).

    Args:
      cls: the plain optimizer class.
      model: the trial's model (roles from :func:`optbench.plugins.roles.roles_of`).
      kwargs: ``cls``'s own constructor keywords.
      hparams: all hyperparameters (the grouping keys among them).
    Returns:
      ``cls(model.parameters(), **kwargs)`` without grouping keys; else a :class:`Combined` of ``cls`` over its role
      groups and the fallback over the others (a part without parameters left out).
    Raises:
      UsageError: as :func:`check`, or roles that no parameter of this model has.
    """
    g, rest_cls = check(cls, hparams)
    if not g.active:
        return cls(model.parameters(), **kwargs)
    parts: dict[str, Any] = {}
    mine = _param_groups(model, g, main=True)
    if mine:
        parts["main"] = cls(mine, **kwargs)
    others = _param_groups(model, g, main=False)
    if others and rest_cls is not None:
        rest_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in g.options.get(REST, {}).items()}
        parts[REST] = rest_cls(others, **rest_kwargs)
    if not parts:
        raise UsageError(f"-o roles={hparams.get('roles')!r}: no parameter of this model has those roles")
    return Combined(parts)


class Combined:
    """Several optimizers over disjoint parameters, stepped, zeroed and saved as one updater.

    ``param_groups`` lists every part's groups (the dicts themselves, so a schedule's lr changes reach them); the
    state dict holds each part's under its name, so a resumed trial restores both exactly.
    """

    def __init__(self, parts: Mapping[str, Any]) -> None:
        self.parts = dict(parts)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.parts.values() for g in opt.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {p: s for opt in self.parts.values() for p, s in opt.state.items()}

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """The first part runs ``closure`` (when given), the others step on the gradients it left."""
        loss = None
        for i, opt in enumerate(self.parts.values()):
            out = opt.step(closure) if i == 0 and closure is not None else opt.step()
            loss = out if i == 0 else loss
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def train(self) -> None:
        """Train mode for each part that has modes (a schedule-free class; its fallback has none)."""
        for opt in self.parts.values():
            if callable(getattr(opt, "train", None)):
                opt.train()

    def eval(self) -> None:
        """Eval mode (averaged weights in the parameters) for each part that has modes."""
        for opt in self.parts.values():
            if callable(getattr(opt, "eval", None)):
                opt.eval()

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != set(self.parts):
            raise ValueError(f"state dict of parts {sorted(state_dict)}, expected {sorted(self.parts)}")
        for name, opt in self.parts.items():
            opt.load_state_dict(state_dict[name])
