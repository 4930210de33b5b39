"""Seeds are studies, and intervals say what they cover, end to end (issue 21, items 1, 2 and 6): ``optbench run``
with several seeds and a ``--study`` stores one study per seed, so ``score --ci`` states its level over 3 studies,
the report pairs the two submissions over 3 seeds, and ``score --effort`` counts trials to the first reach."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.store.reader import read_results

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _invoke(*args: str) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.stdout  # stdout alone: notes and warnings go to stderr


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeds") / "results"
    _invoke("run", "-w", "linreg", "-s", "sgd", "-s", "adamw", "--seed", "0", "--seed", "1", "--seed", "2",
            "--study", "cmp", "--max-steps", "60", "--eval-every", "5", "--target", "0.5", "--device", "cpu",
            "--results-dir", str(root), "--quiet")
    return root


def test_each_seed_of_a_run_is_its_own_study(three_seeds: Path) -> None:
    trials = read_results(three_seeds).trials
    assert sorted(set(trials["study"])) == ["cmp-seed0", "cmp-seed1", "cmp-seed2"]
    assert (trials.groupby(["submission", "study"]).size() == 1).all()


def test_score_ci_states_level_and_n(three_seeds: Path) -> None:
    payload = json.loads(_invoke("score", "--results-dir", str(three_seeds), "--by", "steps", "--ci",
                                 "--format", "json"))
    assert {r["score_n"] for r in payload["rows"]} == {3} and {r["score_level"] for r in payload["rows"]} == {0.9}
    assert "fewest studies in a cell n=3" in payload["score_interval"] and "nominal" in payload["score_interval"]


def test_report_pairs_one_study_per_seed_and_shows_coverage(three_seeds: Path, tmp_path: Path) -> None:
    _invoke("report", "--results-dir", str(three_seeds), "--out", str(tmp_path / "r"), "--by", "steps")
    page = (tmp_path / "r" / "index.html").read_text()
    board = page[page.index('id="leaderboard"'):]
    assert "(75%, n=3)" in board[:board.index("</table>")]  # 3 studies: the min-max, 75% coverage
    paired = page[page.index('id="paired'):]
    assert re.search(r"<td>3</td>", paired[:paired.index("</table>")])  # 3 pairs, one per seed
    assert "Tuning effort" in page and 'id="effort"' in page


def test_score_effort_counts_trials_to_first_reach(three_seeds: Path) -> None:
    payload = json.loads(_invoke("score", "--results-dir", str(three_seeds), "--effort", "--format", "json"))
    rows = {r["submission"]: r for r in payload["rows"]}
    assert set(rows) == {"adamw", "sgd"} and all(r["studies"] == 3 for r in rows.values())
    assert all(r["trials_to_reach"] in (1.0, None) and r["level"] == 0.75 for r in rows.values())
    assert "Tuning effort" in _invoke("score", "--results-dir", str(three_seeds), "--effort", "--format", "markdown")


def test_coinciding_profiles_are_offset_and_marked() -> None:
    import pandas as pd

    from optbench.report.figures import PROFILE_OFFSET, coincident_offsets

    rho = pd.DataFrame({"a": [0.5, 1.0], "b": [0.5, 1.0], "c": [0.0, 1.0], "d": [0.5, 1.0]})
    assert coincident_offsets(rho) == {"a": 0.0, "b": PROFILE_OFFSET, "c": 0.0, "d": 2 * PROFILE_OFFSET}
