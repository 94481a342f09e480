"""check and train: the two steps that run candidate code, always in the
sandbox. A code error goes back to the coder while repairs are left."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from archlab.agents.context import LabContext
from archlab.agents.gate import fingerprint_layer
from archlab.agents.state import ExperimentState
from archlab.sandbox.base import JobResult

CODE_ERRORS = ("crash", "integrity", "nan", "timeout", "oom")  # what a better candidate could fix


def _failure(ctx: LabContext, state: ExperimentState, step: str, result: JobResult) -> dict[str, Any]:
    reason = f"{step} {result.status}: {result.reason or result.log_tail[-500:]}".strip()
    if result.status in CODE_ERRORS and ctx.can_repair(state):
        return {"error": reason}
    return {"outcome": "failed", "reason": reason}


def _execute(ctx: LabContext, state: ExperimentState, step: str, workdir: Path) -> JobResult:
    """Build the task's job and run it in the sandbox, holding GPU slots while it runs."""
    exp, n = state["experiment"], ctx.gpus_per_job()
    make = ctx.task.check_job if step == "check" else ctx.task.train_job
    slots = nullcontext(list(range(n))) if ctx.gpu_slots is None else ctx.gpu_slots.acquire(n)
    with slots as gpus:
        limits = replace(ctx.limits(step), gpus=list(gpus))
        job = make(state["code"] or "", workdir, ctx.seed(exp, step), limits)
        result = ctx.backend.run(job, lambda event: ctx.live.__setitem__(exp, {"step": step, **event}))
    result.gpus = len(gpus)
    return result


def _run(ctx: LabContext, state: ExperimentState, step: str) -> JobResult:
    exp, calls = state["experiment"], state.get("code_calls", 0)
    folder = ctx.folder.experiment(exp)
    workdir = folder / f"{step}-{calls}"
    outcome = folder / f"{step}-{calls}.json"
    if outcome.exists():  # finished before a kill: not run (nor counted) again
        done = JobResult.load(outcome)
        ctx.ledger.event(exp, f"{step}.reused_after_restart", {"status": done.status})
        return done
    code_path = folder / "candidate.py"
    code_path.write_text(state["code"] or "")
    ctx.ledger.update(exp, code_path=str(code_path), status="running")
    ctx.ledger.event(exp, f"{step}.start", {"job": f"{ctx.task.name}-{step}"})
    recorded = ctx.recorded.job(exp, outcome.name) if ctx.recorded is not None else None
    cache_key = (ctx.result_key(ctx.task, state["code"] or "", ctx.seed(exp, step))
                 if step == "train" and ctx.results is not None and ctx.recorded is None else None)
    hit = ctx.results.get(cache_key) if cache_key else None
    if recorded is not None:  # replay: the original run's result stands in for the job
        result = recorded
    elif hit is not None:  # trained before in this workspace: same code, fidelity and seed
        result = JobResult(**{**hit[0], "log_path": None})
        ctx.ledger.event(exp, "train.reused_from_cache", {"from": hit[1]})
    else:
        result = _execute(ctx, state, step, workdir)
        if cache_key and result.ok:
            ctx.results.put(cache_key, result.to_dict(), {"campaign": ctx.folder.id, "experiment": exp})
    ctx.live.pop(exp, None)
    if result.log_path is not None and Path(result.log_path).exists() and recorded is None:
        shutil.copyfile(result.log_path, folder / "log")  # experiments/N/log: the latest job's log
    tmp = outcome.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict()))
    os.replace(tmp, outcome)  # atomic: the job counts as finished only once this exists
    ctx.ledger.event(exp, f"{step}.end", {"status": result.status, "reason": result.reason, "wall_s": result.wall_s})
    if step == "train" and hit is None:
        ctx.ledger.update(exp, train_s=result.wall_s, gpus=result.gpus)
        ctx.ledger.add_spend(gpu_s=result.wall_s * result.gpus, train_s=result.wall_s)
    return result


def check(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    result = _run(ctx, state, "check")
    if not result.ok:
        return _failure(ctx, state, "check", result)
    report = result.result or {}
    if report.get("fingerprint") or report.get("behaviour"):  # the gate's last layer: a twin by behaviour
        twin = fingerprint_layer(ctx, state, report)           # reuses its result
        if twin is not None:
            return twin
    return {"check": report}


def train(ctx: LabContext, state: ExperimentState) -> dict[str, Any]:
    exp = state["experiment"]
    result = _run(ctx, state, "train")
    if not result.ok:
        return _failure(ctx, state, "train", result)
    metrics = (result.result or {}).get("metrics") or {}
    (ctx.folder.experiment(exp) / "metrics.json").write_text(json.dumps(result.result, indent=1))
    ctx.ledger.event(exp, "train.done", {"metrics": metrics}, key=f"{exp}:train.done")
    return {"metrics": metrics}
