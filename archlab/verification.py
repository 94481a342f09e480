"""The verification stage (ASI-Arch's explore -> verify): once the exploration budget is met,
the diverse top-k candidates and every baseline are trained again at the verification fidelity,
all under the same seeds, so each candidate can be tested against the best baseline paired by
seed (archlab.analysis.findings). An optional successive-halving schedule keeps the best of
each rung for the next, which adds seeds.

Exact under kill -9 and resume: the plan (who, which seeds, which preset) is fixed once in the
ledger; each run's result lands atomically in verify/<subject>-s<k>.json before its ledger row,
and a run whose file exists is never run again. A replay answers each run from the original's
files; the workspace result cache answers a run trained before under the same code, fidelity
and seed."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from archlab.agents.context import LabContext, job_limits
from archlab.sandbox.base import JobResult

PLAN = "verify_plan"


def load_run(path: Path) -> tuple[JobResult, dict[str, Any] | None]:
    """A finished run's file: its JobResult, and where the result cache got it from (None: trained here)."""
    data = json.loads(Path(path).read_text())
    reused = data.pop("reused", None)
    path_ = data.get("log_path")
    data["log_path"] = Path(path_) if path_ else None
    return JobResult(**data), reused


def promote(ctx: LabContext, top: int) -> list[Any]:
    """The best `top` evaluated campaign experiments, diverse: no two with one behaviour fingerprint,
    and (while others are left) no two of one design family. Ties: the earlier experiment."""
    rows = [e for e in ctx.ledger.experiments(status=["done"], origin=["campaign"])]
    ranked = ctx.task.ranked(rows, tiebreak=lambda e: e.id)
    picked: list[Any] = []
    for distinct_family in (True, False):  # second pass: fill from families already picked
        for e in ranked:
            if len(picked) >= top:
                return picked
            if e in picked or (e.fingerprint and e.fingerprint in {p.fingerprint for p in picked}):
                continue
            family = ctx.task.family((e.proposal or {}).get("genome"))
            if distinct_family and family is not None and family in {
                    ctx.task.family((p.proposal or {}).get("genome")) for p in picked}:
                continue
            picked.append(e)
    return picked


class Verification:
    """The stage of one campaign; `run()` starts or continues it to its end."""

    def __init__(self, ctx: LabContext) -> None:
        from archlab.tasks import get_task

        self.ctx, self.cfg = ctx, ctx.config.verify
        self.dir = ctx.folder.root / "verify"
        task_cfg = ctx.config.task
        preset = self.cfg.preset or ctx.task.verify_preset()
        options = dict(task_cfg.options)
        if self.cfg.data is not None:
            options["extra_eval"] = str(self.cfg.data)
        self.task = get_task(task_cfg.name, options, preset)  # a bad preset or option fails here
        self.task.validate()
        self.preset = getattr(self.task, "preset", None) or "default"
        self.live: dict[str, dict[str, Any]] = {}  # the last progress event of each run in flight
        self.tick = time.time()

    # -- the plan: fixed once --------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        stored = self.ctx.ledger.get_meta(PLAN)
        if stored is not None:
            return stored
        seeds = self.cfg.seeds
        subjects: list[dict[str, Any]] = []
        for e in promote(self.ctx, self.cfg.top):
            subjects.append({"key": f"e{e.id}", "role": "candidate", "name": e.name, "experiment": e.id,
                             "explored": e.score, "arm": (e.proposal or {}).get("arm") or "strategy",
                             "code": Path(e.code_path).read_text() if e.code_path else ""})
        baselines = {e.name: e for e in self.ctx.ledger.experiments(origin=["baseline"])}
        for c in self.ctx.task.seeds():
            row = baselines.get(c.name)
            subjects.append({"key": f"b:{c.name}", "role": "baseline", "name": c.name,
                             "experiment": row.id if row else None, "explored": row.score if row else None,
                             "arm": None, "code": c.code})
        self.dir.mkdir(exist_ok=True)
        for s in subjects:  # the code each run trains, beside its results
            (self.dir / f"{s['key'].replace(':', '_')}.py").write_text(s.pop("code"))
        n_candidates = sum(s["role"] == "candidate" for s in subjects)
        plan = {"preset": self.preset, "seeds_per_rung": seeds, "rungs": [n_candidates] + list(self.cfg.rungs),
                "data": str(self.cfg.data) if self.cfg.data else None, "subjects": subjects, "alpha": self.cfg.alpha,
                "seeds": [self.seed(k) for k in range(seeds * (1 + len(self.cfg.rungs)))]}
        with self.ctx.ledger.transaction():
            if self.ctx.ledger.get_meta(PLAN) is None:
                self.ctx.ledger.set_meta(PLAN, plan)
                self.ctx.ledger.event(None, "verify.plan", {"subjects": [s["key"] for s in subjects],
                                                            "preset": self.preset, "seeds": plan["seeds"]})
        return self.ctx.ledger.get_meta(PLAN)

    def seed(self, index: int) -> int:
        """The index-th verification seed: one list for every subject (runs pair by seed), from the
        campaign seed, never from time."""
        return self.ctx.seed(0, "verify", index)

    def code(self, subject: dict[str, Any]) -> str:
        return (self.dir / f"{subject['key'].replace(':', '_')}.py").read_text()

    # -- the rungs ---------------------------------------------------------------------------------
    def rung_subjects(self, plan: dict[str, Any], rung: int, done: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
        """Every baseline, and the candidates kept for `rung`: at rung 0 all of them, later the best
        `rungs[rung]` by their verified mean so far (fixed once, in the ledger)."""
        subjects = plan["subjects"]
        candidates = [s for s in subjects if s["role"] == "candidate"]
        if rung > 0:
            key = f"verify_rung_{rung}"
            kept = self.ctx.ledger.get_meta(key)
            if kept is None:
                keep = plan["rungs"][rung]
                values = {s["key"]: sum(v.values()) / len(v) for s in candidates if (v := done.get(s["key"]))}
                alive = [s for s in candidates if s["key"] in values and s["key"] in self._kept(plan, rung - 1)]
                alive.sort(key=lambda s: -values[s["key"]] if self.task.higher() else values[s["key"]])
                kept = [s["key"] for s in alive[:keep]]
                self.ctx.ledger.set_meta(key, kept)
                self.ctx.ledger.event(None, "verify.rung", {"rung": rung, "kept": kept})
            candidates = [s for s in candidates if s["key"] in kept]
        return candidates + [s for s in subjects if s["role"] == "baseline"]

    def _kept(self, plan: dict[str, Any], rung: int) -> list[str]:
        if rung == 0:
            return [s["key"] for s in plan["subjects"] if s["role"] == "candidate"]
        return self.ctx.ledger.get_meta(f"verify_rung_{rung}") or []

    def values(self) -> dict[str, dict[int, float]]:
        """Each subject's finished runs: seed index -> the searched metric."""
        out: dict[str, dict[int, float]] = {}
        for r in self.ctx.ledger.verify_runs():
            v = self.task.score(r["metrics"]) if r["status"] == "ok" else None
            if v is not None:
                out.setdefault(r["subject"], {})[r["seed_index"]] = v
        return out

    # -- running ---------------------------------------------------------------------------------
    def run(self, on_progress: Callable[[dict[str, Any]], None] | None = None) -> str:
        """Run what is left of the stage; the reason it ended ("verified ..." or a budget)."""
        ctx = self.ctx
        plan = self.plan()
        if ctx.recorded is None or getattr(ctx.recorded, "retrain", False):
            self.task.prepare(ctx.folder.root)
        ctx.ledger.event(None, "verify.start", {"preset": plan["preset"]})
        self.tick = time.time()
        pool = ThreadPoolExecutor(ctx.config.search.parallel, thread_name_prefix="verify")
        try:
            reason = self._rungs(pool, plan, on_progress)
        except KeyboardInterrupt:  # stop now: finished runs are kept, the rest resumes
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        ctx.ledger.add_spend(verify_wall_s=time.time() - self.tick)
        if reason is not None:
            ctx.ledger.event(None, "verify.stop", {"reason": reason})
            return reason
        n = len(ctx.ledger.verify_runs())
        ctx.ledger.set_meta("verify_done", True)
        ctx.ledger.event(None, "verify.done", {"runs": n}, key="verify.done")
        return f"verified: {n} runs at preset {plan['preset']}"

    def _rungs(self, pool: ThreadPoolExecutor, plan: dict[str, Any],
               on_progress: Callable[[dict[str, Any]], None] | None) -> str | None:
        """Each rung's runs that are not finished yet; a budget reason when the stage stops early."""
        per_rung, parallel = plan["seeds_per_rung"], self.ctx.config.search.parallel
        for rung in range(len(plan["rungs"])):
            finished = {(r["subject"], r["seed_index"]) for r in self.ctx.ledger.verify_runs()}
            todo = [(s, k) for s in self.rung_subjects(plan, rung, self.values())
                    for k in range(rung * per_rung, (rung + 1) * per_rung) if (s["key"], k) not in finished]
            futures: list[Future] = []
            stopped = None
            for subject, k in todo:
                stopped = self.over_budget()
                if stopped:
                    break
                futures.append(pool.submit(self.run_one, subject, k, plan["seeds"][k]))
                while sum(not f.done() for f in futures) >= parallel:
                    self._wait(futures, on_progress, plan)
            while not all(f.done() for f in futures):
                self._wait(futures, on_progress, plan)
            for f in futures:
                f.result()  # a bug in the stage surfaces here, after the other runs were kept
            if stopped or (rung + 1 < len(plan["rungs"]) and (stopped := self.over_budget())):
                return stopped
        return None

    def _wait(self, futures: list[Future], on_progress: Callable[[dict[str, Any]], None] | None,
              plan: dict[str, Any]) -> None:
        wait([f for f in futures if not f.done()], timeout=0.5, return_when=FIRST_COMPLETED)
        now = time.time()
        self.ctx.ledger.add_spend(verify_wall_s=now - self.tick)
        self.tick = now
        if on_progress:
            on_progress({"verify": {"done": len(self.ctx.ledger.verify_runs()), "total": self.total(plan),
                                    "preset": plan["preset"], "live": dict(self.live)}})

    def total(self, plan: dict[str, Any]) -> int:
        """Runs the stage makes when every rung keeps what its schedule says."""
        n_base = sum(s["role"] == "baseline" for s in plan["subjects"])
        return plan["seeds_per_rung"] * sum(n_base + kept for kept in plan["rungs"])

    def over_budget(self) -> str | None:
        spend = self.ctx.ledger.spend()
        if self.cfg.hours is not None and spend.get("verify_wall_s", 0) >= self.cfg.hours * 3600:
            return (f"verification wall-clock budget reached ({self.cfg.hours} h); raise [verify] hours and "
                    "resume to finish it")
        if self.cfg.gpu_hours is not None and spend.get("verify_gpu_s", 0) >= self.cfg.gpu_hours * 3600:
            return (f"verification GPU-hour budget reached ({self.cfg.gpu_hours} h); raise [verify] gpu_hours "
                    "and resume to finish it")
        return None

    def run_one(self, subject: dict[str, Any], k: int, seed: int) -> None:
        """One training of `subject` under seed `k`, exactly once."""
        ctx, key = self.ctx, subject["key"]
        name = f"{key.replace(':', '_')}-s{k}"
        out = self.dir / f"{name}.json"
        reused = None
        if out.exists():  # finished before a kill: kept, not run again
            result, reused = load_run(out)
            ctx.ledger.event(None, "verify.reused_after_restart", {"subject": key, "seed_index": k})
        else:
            code = self.code(subject)
            recorded = ctx.recorded.verify_job(name) if ctx.recorded is not None else None
            cache_key = ctx.result_key(self.task, code, seed) if ctx.recorded is None else None
            hit = ctx.results.get(cache_key) if cache_key and ctx.results is not None else None
            ctx.ledger.event(None, "verify.job.start", {"subject": key, "seed_index": k, "seed": seed})
            if recorded is not None:
                result = recorded
            elif hit is not None:
                result, reused = JobResult(**{**hit[0], "log_path": None}), hit[1]
            else:
                result = self._execute(code, self.dir / name, seed, key)
                if result.ok and cache_key and ctx.results is not None:
                    ctx.results.put(cache_key, result.to_dict(), {"campaign": ctx.folder.id, "verify": name})
            if reused is None and recorded is None:
                ctx.ledger.add_spend(verify_train_s=result.wall_s, verify_gpu_s=result.wall_s * result.gpus)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({**result.to_dict(), "reused": reused}))
            os.replace(tmp, out)  # atomic: the run counts as finished only once this exists
        metrics = (result.result or {}).get("metrics") if result.ok else None
        if ctx.ledger.add_verify_run(key, k, seed, result.status, metrics, result.reason[:500], result.wall_s,
                                     result.gpus, reused):
            ctx.ledger.event(None, "verify.job.end", {"subject": key, "seed_index": k, "status": result.status,
                                                      "score": self.task.score(metrics)}, key=f"verify:{name}")

    def _execute(self, code: str, workdir: Path, seed: int, key: str) -> JobResult:
        ctx = self.ctx
        sandbox = ctx.config.sandbox
        n = sandbox.gpus_per_job if sandbox.gpus_per_job is not None else (
            1 if self.task.uses_gpu and (sandbox.backend == "ray" or (ctx.gpu_slots and ctx.gpu_slots.gpus)) else 0)
        slots = nullcontext(list(range(n))) if ctx.gpu_slots is None else ctx.gpu_slots.acquire(n)
        with slots as gpus:
            limits = replace(job_limits(self.task, sandbox, "train"), gpus=list(gpus))
            job = self.task.train_job(code, workdir, seed, limits)
            result = ctx.backend.run(job, lambda event: self.live.__setitem__(key, event))
            self.live.pop(key, None)
        result.gpus = len(gpus)
        return result
