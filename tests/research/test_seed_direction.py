"""The Seesaw comparison's paired tests say which way the seeds went: a p-value alone does not, and a median over
the seeds where both reached the target can point the other way (AdamW on linreg: Seesaw sooner in the 4 seeds
where both reached, later in 9 of 13 informative seeds, where it missed and its twin reached)."""

from __future__ import annotations

from optbench.recipes.seesaw import RunSummary, paired_lines


def _run(tail: float, steps: int | None) -> RunSummary:
    return RunSummary(steps=100, examples=1000, tail_metric=tail, final_metric=tail, steps_to_target=steps,
                      examples_to_target=None if steps is None else steps * 10)


def test_a_miss_counts_as_slower_and_the_line_gives_the_direction():
    pairs = [(0, _run(0.1, 50), _run(0.2, 40)),  # (seed, twin, seesaw): Seesaw sooner
             (1, _run(0.1, 50), _run(0.2, None)),  # Seesaw missed: later
             (2, _run(0.1, 50), _run(0.2, None)),
             (3, _run(0.1, None), _run(0.2, None))]  # both missed: no information
    tail, steps = [line for line in paired_lines(pairs, metric="loss") if line.startswith("Paired test")]
    assert "Seesaw's lower in 0 of them" in tail  # its tail metric is higher in every seed
    assert "(3 informative; Seesaw's lower in 1 of them)" in steps
