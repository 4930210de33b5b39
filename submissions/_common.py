"""Helpers shared by the built-in submissions: schedules from hyperparameters, search-space files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from optbench.api import TrialInfo, Updater
from optbench.schedules import Scheduled, from_hparams

SEARCH_SPACES = Path(__file__).parent / "search_spaces"

SCHEDULE_DEFAULTS: Mapping[str, Any] = {"schedule": "cosine", "warmup_frac": 0.05, "decay_floor": 0.1}


def search_space_file(name: str) -> Path:
    """Path of the packaged search-space JSON ``search_spaces/<name>.json``."""
    return SEARCH_SPACES / f"{name}.json"


def with_schedule(
    make: Callable[[nn.Module, Mapping[str, Any], TrialInfo], Any],
) -> Callable[[nn.Module, Mapping[str, Any], TrialInfo], Updater]:
    """Wrap an optimizer factory so the result follows the schedule named in the hyperparameters.

    The schedule spans ``info.step_hint`` steps (the workload's estimate of what a tuned baseline needs).
    """

    def factory(model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo) -> Updater:
        return Scheduled(make(model, hparams, info), from_hparams(hparams, total_steps=info.step_hint))

    return factory
