"""Parameter roles: which part of the model each parameter is (:class:`optbench.api.Role`).

Methods such as Muon treat hidden matrices differently from embeddings, the output head and the vectors (norm
gains, biases). Guessing those parts from module types inside every submission gives each submission its own
answer (the last ``nn.Linear`` is the head, except where it is not); here the workload names them once
(``Task.param_roles``), the harness attaches them to the model it builds (:func:`attach`), and every submission
reads the same answer with :func:`roles_of`. A model the harness did not build (a test's, the conformance
quadratic's) is classified by :func:`default_roles`.

Roles are keyed by the names :func:`optbench.api.named_params` yields: a tied weight is one tensor, named once
(under its first name), with one role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from optbench.api import Role, named_params
from optbench.errors import PluginError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

ATTR = "_optbench_param_roles"  # where attach() keeps a model's roles (a plain dict: models are deep-copied)


def _head(model: nn.Module) -> Any:
    """The output head: the last ``nn.Linear`` in registration order, unless it maps back to the width of an
    ``nn.Embedding`` (then the model ends in its residual stream and reads logits off a tied embedding, as GPT does,
    and that Linear is a hidden layer). None when there is no Linear or the head is tied."""
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    widths = {m.embedding_dim for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    return None if linears[-1].out_features in widths else linears[-1]


def default_roles(model: nn.Module) -> dict[str, Role]:
    """Roles by module type, for models whose task names none.

    In order of precedence: weights of ``nn.Embedding``/``nn.EmbeddingBag`` are ``EMBEDDING`` (a head tied to one
    too); the head's weight and bias (see :func:`_head`) ``HEAD``; other 2-D+ weights of ``nn.Linear`` and
    convolutions ``HIDDEN``; other 2-D+ tensors (a hand-made position table) ``EMBEDDING``; scalars and vectors
    ``NORM_BIAS``.
    """
    from torch import nn

    embedded = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    head = _head(model)
    heads = {id(p) for p in (head.weight, head.bias) if p is not None} if head is not None else set()
    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    weights = {id(m.weight) for m in model.modules() if isinstance(m, layers)}
    out: dict[str, Role] = {}
    for name, p in named_params(model):
        if id(p) in embedded:
            out[name] = Role.EMBEDDING
        elif id(p) in heads:
            out[name] = Role.HEAD
        elif p.dim() >= 2:
            out[name] = Role.HIDDEN if id(p) in weights else Role.EMBEDDING
        else:
            out[name] = Role.NORM_BIAS
    return out


def check_roles(model: nn.Module, roles: Mapping[str, Any], *, where: str) -> dict[str, Role]:
    """``roles`` as :class:`Role` values, checked to name every trainable parameter of ``model`` exactly once.

    Raises:
      PluginError: a parameter without a role, a name that is no trainable parameter (a tied weight's second name,
        a frozen one, a typo), or a value that is no role; naming ``where``.
    """
    names = [n for n, _ in named_params(model)]
    missing = [n for n in names if n not in roles]
    extra = sorted(set(roles) - set(names))
    if missing or extra:
        raise PluginError(f"{where}: parameter roles must name every trainable parameter once; "
                          f"without a role: {', '.join(missing) or '-'}; not a parameter: {', '.join(extra) or '-'}")
    try:
        return {n: Role(roles[n]) for n in names}
    except ValueError as exc:
        raise PluginError(f"{where}: {exc}; roles: {', '.join(r.value for r in Role)}") from None


def task_roles(task: Any, model: nn.Module) -> dict[str, Role]:
    """The roles ``task`` names for ``model`` (its optional ``param_roles``), else :func:`default_roles`."""
    name = getattr(task, "param_roles", None)
    if name is None:
        return default_roles(model)
    return check_roles(model, name(model), where=f"{type(task).__name__}.param_roles")


def attach(model: nn.Module, roles: Mapping[str, Role]) -> None:
    """Keep ``roles`` on ``model`` for :func:`roles_of` (the harness does this once, before the submission)."""
    model.__dict__[ATTR] = dict(roles)


def roles_of(model: nn.Module) -> dict[str, Role]:
    """The roles of ``model``'s trainable parameters: those attached by the harness, else :func:`default_roles`."""
    attached = model.__dict__.get(ATTR)
    return dict(attached) if attached is not None else default_roles(model)


def by_role(model: nn.Module) -> dict[Role, list[Any]]:
    """``model``'s trainable parameters grouped by role, every role present (maybe empty), in ``Role`` order and,
    within a role, in :func:`named_params` order."""
    roles = roles_of(model)
    out: dict[Role, list[Any]] = {r: [] for r in Role}
    for name, p in named_params(model):
        out[roles[name]].append(p)
    return out
