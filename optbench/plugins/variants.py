"""Submission variants a recipe runs, named so that a trial can be prepared again from plain values in any process.

A variant derives a submission from a loaded one (:func:`apply_variant`), recorded under its own name with the
base's origin:

- ``shapes``: the submission accepting every schedule hyperparameter (``<name>_shapes``), for the schedule-shape
  search (:func:`optbench.plugins.wrapping.with_schedule_keys`);
- ``seesaw``: the submission run with Seesaw's batch-size ramp (``seesaw_<name>``), and ``step``: its step-decay
  twin (``<name>_step``) (:func:`optbench.plugins.seesaw.seesaw_loaded`).
"""

from __future__ import annotations

from typing import Any

from optbench.errors import UsageError

VARIANTS = ("shapes", "seesaw", "step")


def apply_variant(loaded: Any, variant: str) -> Any:
    """``loaded`` (a :class:`optbench.plugins.registry.Loaded` submission) in the form ``variant`` names.

    Raises:
      UsageError: an unknown variant, or a submission the variant cannot derive from (one without a schedule).
    """
    from optbench.plugins.seesaw import seesaw_loaded
    from optbench.plugins.wrapping import derived, with_schedule_keys

    if variant not in VARIANTS:
        raise UsageError(f"unknown submission variant {variant!r}; variants: {', '.join(VARIANTS)}")
    if "schedule" not in loaded.obj.defaults:
        raise UsageError(f"submission {loaded.name!r} takes no schedule hyperparameter; the {variant!r} variant "
                         "needs a scheduled one")
    if variant == "shapes":
        return derived(loaded, with_schedule_keys(loaded.obj, name=f"{loaded.obj.name}_shapes"),
                       name=f"{loaded.name}_shapes")
    try:
        seesaw, twin = seesaw_loaded(loaded)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return seesaw if variant == "seesaw" else twin
