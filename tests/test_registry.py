"""Loading plugins by entry point, module path and file path; checking them against the API."""

from __future__ import annotations

import pytest

from optbench.api import SubmissionSpec
from optbench.errors import PluginError, UsageError
from optbench.plugins.registry import entry_points, load_all, load_submission, load_workload


def test_builtins_register_through_entry_points():
    assert {"adamw", "nadamw", "sgd", "nesterov"} <= set(entry_points("submissions"))
    assert "linreg" in entry_points("workloads")
    loaded = load_submission("adamw")
    assert loaded.origin.source == "entry-point" and loaded.origin.distribution == "optbench"


def test_torch_optimizer_class_becomes_a_submission():
    loaded = load_submission("torch.optim:RMSprop")
    sub = loaded.obj
    assert isinstance(sub, SubmissionSpec) and sub.name == "torch.optim:RMSprop"
    assert sub.defaults["lr"] == 0.01 and "alpha" in sub.defaults
    assert loaded.origin.source == "module" and loaded.origin.distribution == "torch"


def test_file_plugin_records_its_hash(bad_plugins):
    loaded = load_submission(f"{bad_plugins}:averaging")
    assert loaded.origin.source == "file" and loaded.origin.version.startswith("sha256:")


def test_errors_name_the_plugin(bad_plugins):
    with pytest.raises(PluginError, match="'tests/plugins/broken_plugin.py:x' failed to import"):
        load_submission("tests/plugins/broken_plugin.py:x")
    with pytest.raises(PluginError, match="has no attribute 'Nope'"):
        load_submission(f"{bad_plugins}:Nope")
    with pytest.raises(PluginError, match="does not fit the API"):
        load_workload(f"{bad_plugins}:averaging")
    with pytest.raises(UsageError, match="did you mean 'linreg'"):
        load_workload("linre")
    with pytest.raises(UsageError, match="must look like"):
        load_submission(":x")


def test_load_all_reports_without_raising():
    items = load_all("submissions")
    assert items and all(not isinstance(i, tuple) for i in items)
