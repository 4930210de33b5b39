"""``optbench schedules``: prints the values for given hyperparameters, plots a PNG, bad input is one line."""

from __future__ import annotations

from click.testing import CliRunner

from optbench.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_prints_values_at_the_given_steps_and_writes_a_png(tmp_path):
    png = tmp_path / "plots" / "s.png"
    r = invoke("schedules", "--schedule", "step", "--schedule", "wsd", "--total-steps", "100",
               "--steps", "50,51,90,100", "--lr", "0.2", "--png", str(png))
    assert r.exit_code == 0, r.output
    lines = [ln.split() for ln in r.output.splitlines() if ln.strip() and ln.split()[0].isdigit()]
    assert lines == [["50", "0.2", "0.2"], ["51", "0.1", "0.2"], ["90", "0.05", "0.1"], ["100", "0.05", "0"]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_names_every_schedule_with_its_keys():
    r = invoke("schedules", "--list")
    assert r.exit_code == 0
    for name in ("constant", "cosine", "linear", "wsd", "invsqrt", "step", "poly"):
        assert any(line.startswith(name + " ") for line in r.output.splitlines()), name
    assert "cooldown_shape=linear" in r.output and "decay_milestones=(0.5, 0.75)" in r.output


def test_bad_values_are_one_line_and_exit_2():
    for args in (["-o", "schedule=wsd", "-o", "cooldown_frac=2"], ["--steps", "0"], ["--steps", "a,b"],
                 ["--total-steps", "0"], ["-o", "schedule=spiral"]):
        r = CliRunner().invoke(main, ["schedules", *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output.count("\n") == 1 and r.output.startswith("error: "), r.output
