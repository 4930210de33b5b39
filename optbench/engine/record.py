"""A trial's record: everything about it but its curve, built from what was prepared and where its loop ended."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from optbench import SCHEMA_VERSION
from optbench.api import reached
from optbench.engine.backends import compiles_counted, matmul_precision
from optbench.engine.batches import accumulation_steps
from optbench.engine.flops import mfu
from optbench.engine.load import Load
from optbench.engine.loop import TrialLoop
from optbench.engine.prepared import PreparedTrial
from optbench.parallel.distributed import Group
from optbench.store import provenance
from optbench.store.records import EvalRow, TrialRecord
from optbench.store.records import best as best_value


def _to_target(rows: list[EvalRow], metric_goal: str, target: float) -> EvalRow | None:
    return next((r for r in rows if reached(r.metric_value, target, metric_goal)), None)


def record_of(prep: PreparedTrial, outcome: str, reason: str | None, loop: TrialLoop | None,
            group: Group | None = None, load: Load | None = None) -> TrialRecord:
    """The trial's metadata from what was prepared, where the loop ended and the machine's load meanwhile."""
    w = prep.workload.obj
    goal = w.metric.goal.value
    rows = loop.state.rows if loop is not None else []
    hit = _to_target(rows, goal, prep.target) if outcome == "reached" else None
    best = best_value([r.metric_value for r in rows], goal)
    prov = provenance.collect(prep.device)
    now = datetime.now(timezone.utc)
    return TrialRecord(
        schema_version=SCHEMA_VERSION, run_id=f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        created_at=now.isoformat(timespec="seconds"), workload=w.name, size=prep.size.name,
        workload_origin=f"{prep.workload.origin.distribution}=={prep.workload.origin.version}",
        submission=prep.submission.label,
        submission_origin=f"{prep.submission.origin.distribution}=={prep.submission.origin.version}",
        hparams=prep.hparams_json, seed=prep.seed, study=prep.study, trial=prep.trial, outcome=outcome,
        metric_name=w.metric.name, metric_goal=goal, target=prep.target,
        time_to_target=hit.timed_seconds if hit else None, steps_to_target=hit.step if hit else None,
        examples_to_target=hit.examples if hit else None, tokens_to_target=hit.tokens if hit else None,
        best_metric=best, total_steps=loop.state.counters.step if loop else 0,
        total_timed_seconds=loop.state.clock.timed if loop else 0.0, max_steps=prep.budget.max_steps,
        max_seconds=prep.budget.max_seconds, error=reason, **prov.as_dict(),
        compiled=prep.compile, micro_batch_size=prep.micro_batch_size,
        accumulation_steps=accumulation_steps(prep.batch_size, world_size=prep.world_size,
                                              micro=prep.micro_batch_size),
        world_size=prep.world_size, dist_backend=group.backend if group is not None else "",
        device_names=group.names if group is not None else prov.device_name,
        sync_every=prep.sync_every, resumes=loop.state.counters.resumes if loop else 0,
        lost_seconds=loop.state.counters.lost_seconds if loop else 0.0,
        step_hint=prep.info.step_hint, base_batch_size=prep.batch_size, diagnostics=prep.diagnostics,
        study_kind=prep.study_kind, varies=",".join(prep.varies), deterministic=prep.deterministic,
        matmul_precision=matmul_precision(prep.device, prep.tf32), **_compiled(prep, loop),
        **_flops(prep, loop, hit, prov.device_name), model_config=prep.model_config, target_kind=prep.target_kind,
        stopped_by=stopped_by(prep, outcome, loop),
        **(load.as_fields() if load is not None else {}),
        capabilities=",".join(sorted(c.value for c in prep.submission.obj.capabilities)),
    )


def stopped_by(prep: PreparedTrial, outcome: str, loop: TrialLoop | None) -> str:
    """Which budget ended a trial that ran to its budget (a miss, or a full-budget trial): ``steps`` when the step
    budget is spent (it alone would have ended the trial there), else ``seconds``; "" when no budget ended it."""
    ran_out = outcome == "missed" or (outcome == "reached" and prep.full_budget)
    if loop is None or not ran_out or not loop.budget_spent():
        return ""
    steps = prep.budget.max_steps
    return "steps" if steps is not None and loop.state.counters.step >= steps else "seconds"


def _compiled(prep: PreparedTrial, loop: TrialLoop | None) -> dict[str, float | int | None]:
    """What ``--compile`` cost the trial (None when it was off)."""
    if not prep.compile or not compiles_counted():
        return {"compile_seconds": None, "recompiles": None}
    c = loop.state.counters if loop is not None else None
    return {"compile_seconds": c.compile_seconds if c else 0.0, "recompiles": c.recompiles if c else 0}


def _flops(prep: PreparedTrial, loop: TrialLoop | None, hit: EvalRow | None,
           device_name: str) -> dict[str, float | None]:
    """FLOPs counted at trial start, to the target and in all, MFU, and the optimizer's share of the timed seconds."""
    counts = loop.flops if loop is not None else None
    if counts is None:
        return {}
    c, timed = loop.state.counters, loop.state.clock.timed
    try:
        share = loop.optimizer_share()
    except RuntimeError:  # ended mid-stretch (an error): its last events may never have run
        share = None
    return {"model_flops_per_example": counts.model_per_example, "optimizer_flops_per_step": counts.optimizer_per_step,
            "flops_to_target": counts.total(hit.examples, hit.step) if hit else None,
            "total_flops": counts.total(c.examples, c.step),
            "mfu": mfu(counts.model_per_example, c.examples, timed, device_name=device_name,
                       world_size=prep.world_size) if prep.device.startswith("cuda") else None,
            "optimizer_share": share}
