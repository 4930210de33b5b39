"""Results carry no host or user names (issue 8): a file plugin's origin is its file name and hash, not its path."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from optbench.plugins.registry import load_submission


def test_file_plugin_origin_is_name_and_hash_without_its_folder(bad_plugins, tmp_path):
    home = tmp_path / "home" / "alice" / "work"  # where a user keeps it: must not reach the results
    home.mkdir(parents=True)
    plugin = Path(shutil.copy(bad_plugins, home / "my_opt.py"))
    loaded = load_submission(f"{plugin}:averaging")
    digest = hashlib.sha256(plugin.read_bytes()).hexdigest()[:12]
    assert loaded.origin.source == "file"
    assert (loaded.origin.distribution, loaded.origin.version) == ("my_opt.py", f"sha256:{digest}")
    relative = load_submission("tests/plugins/bad_optimizers.py:averaging")
    assert relative.origin.distribution == "bad_optimizers.py"  # the same rule for a relative path
