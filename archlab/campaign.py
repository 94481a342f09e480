"""The campaign runner: keeps K experiment graphs in flight, checks budgets
before starting the next, and on resume first finishes every unfinished
experiment from its checkpoint. The ledger allocates an experiment's id before
its thread starts, so a kill between the two makes neither a ghost nor a twin."""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlab.agents.context import LabContext
from archlab.campaign_folder import CampaignFolder
from archlab.config import Config, merge, validate
from archlab.errors import ArchlabError, BudgetExceeded, ConfigError, ModelUnavailable
from archlab.memory.ledger import IN_FLIGHT, Ledger

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class Summary:
    campaign: str
    stop_reason: str
    counts: dict[str, int]
    spend: dict[str, float]
    best: dict[str, Any] | None
    paused: str | None = None  # "unreachable" (resume as is) or "refused" (fix the setting, then resume)
    verification: str | None = None  # how the verification stage ended, where there is one


def backend_options(sandbox: Any, untrusted: bool = True, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The sandbox settings each backend takes. `untrusted`: the code comes from a model or a
    user (not the task's own templates), so the process backend refuses to run it unisolated."""
    from archlab.sandbox.isolation import resolve

    docker = {k: getattr(sandbox, k) for k in ("image", "runtime", "user") if getattr(sandbox, k) is not None}
    if sandbox.backend == "docker":
        return docker
    if sandbox.backend == "ray":
        if sandbox.inner == "docker":
            return {"address": sandbox.address, "inner": "docker", **docker}
        # The driver decides (a local cluster's workers are this machine); remote workers check again.
        return {"address": sandbox.address, "inner": "process",
                "isolation": resolve(sandbox.isolation, untrusted, warn)}
    return {"isolation": resolve(sandbox.isolation, untrusted, warn)}


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def isolation_in_force(sandbox: Any, options: dict[str, Any]) -> str:
    """process+bwrap, docker, docker+runsc, none, or ray(...) of those: what the header and `show` say."""
    from archlab.sandbox.isolation import describe

    return describe(sandbox.backend, options.get("isolation", "none"), sandbox.runtime, sandbox.inner)


class Campaign:
    def __init__(self, folder: CampaignFolder, config: Config, recorded: Any = None,
                 untrusted: bool | None = None) -> None:
        """`recorded` (a replay.RecordedRun) answers the model and the sandbox from a logged run.
        `untrusted`: code from a model or a user runs (also: the strategy is llm, or it ever was)."""
        from archlab.sandbox import get_backend
        from archlab.tasks import get_task

        self.folder, self.config = folder, config
        task = get_task(config.task.name, config.task.options, config.task.preset)
        task.validate()
        self.ledger = Ledger(folder.ledger)
        # Code from a model or a user once is untrusted for good: a resume with another strategy
        # still reruns it. A replay runs no job (the log answers) unless it retrains.
        untrusted = bool(untrusted or config.strategy == "llm" or self.ledger.get_meta("untrusted_code", False))
        if untrusted:
            self.ledger.set_meta("untrusted_code", True)
        runs_jobs = recorded is None or bool(getattr(recorded, "retrain", False))
        options = backend_options(config.sandbox, untrusted and runs_jobs, _warn if runs_jobs else None)
        self.isolation = isolation_in_force(config.sandbox, options)
        llm, ensemble = self._llm(recorded)
        self.ctx = LabContext(config=config, folder=folder, ledger=self.ledger, task=task,
                              backend=get_backend(config.sandbox.backend, **options), llm=llm, ensemble=ensemble,
                              recorded=recorded, memory=self._memory())
        if config.search.reuse_results and recorded is None:
            from archlab.memory.results import ResultCache

            self.ctx.results = ResultCache(folder.root.parent / "results.sqlite")
        if config.sandbox.backend != "ray":  # on ray, the cluster assigns the devices
            from archlab.sandbox.gpus import GpuSlots, detect_gpus

            try:
                self.ctx.gpu_slots = GpuSlots(detect_gpus(config.sandbox.gpus), config.sandbox.jobs_per_gpu)
            except ValueError as exc:  # e.g. an unreadable CUDA_VISIBLE_DEVICES
                raise ConfigError(f"cannot tell which GPUs to use: {exc}; set [sandbox] gpus = [0, 1]") from None
            wanted, have = self.ctx.gpus_per_job(), len(self.ctx.gpu_slots.gpus)
            if wanted > have:
                raise ConfigError(f"each job needs {wanted} GPU(s) but {have} are available "
                                  f"({self.ctx.gpu_slots.gpus}); lower [sandbox] gpus_per_job or add GPUs")
        self._graph: Any = None
        self._graph_lock = threading.Lock()

    # -- opening ------------------------------------------------------------
    @classmethod
    def create(cls, config: Config, folder: CampaignFolder | None = None) -> Campaign:
        from archlab.tasks import get_task

        task = get_task(config.task.name, config.task.options, config.task.preset)
        task.validate()  # fail before any folder
        if config.search.parents == "map_elites":
            from archlab.agents.parents import check_descriptors

            check_descriptors(task)
        backend_options(config.sandbox, config.strategy == "llm")  # refuses unisolated model code, before any folder
        if config.verify.top:  # a bad verification preset or data path fails before any folder, too
            get_task(config.task.name, {**config.task.options, **({"extra_eval": str(config.verify.data)}
                                                                  if config.verify.data else {})},
                     config.verify.preset or task.verify_preset()).validate()
        folder = folder or CampaignFolder.create(config.workspace, config.task.name)
        folder.write_config(config.model_dump(mode="json"))
        return cls(folder, config)

    @classmethod
    def open(cls, workspace: Path, campaign_id: str, overrides: dict[str, Any] | None = None) -> Campaign:
        folder = CampaignFolder.open(workspace, campaign_id)
        data = folder.read_config()
        if overrides:
            data = merge(data, overrides)
        config = validate(data, f"campaign {folder.id} with your flags")  # never store a bad value
        if overrides:
            folder.write_config(data)
        return cls(folder, config)

    def _llm(self, script: Any = None) -> tuple[Any, Any]:
        """(the default client, the ensemble or None). One client per model of the ensemble, all
        writing the campaign's llm.jsonl and billing its spend; a replay's record answers each."""
        llm = self.config.llm
        if self.config.strategy != "llm":
            return None, None
        if not llm.ensemble:
            raise ArchlabError("strategy `llm` needs a model: pass --model provider/name "
                               "or set [llm] model (or models, an ensemble) in archlab.toml")
        from archlab.llm import LLMClient

        def on_usage(usage: Any) -> None:
            self.ledger.add_spend(tokens=usage.prompt_tokens + usage.completion_tokens,
                                  usd=usage.cost_usd, llm_calls=1)

        def client(model: str) -> Any:
            return LLMClient.from_config(llm, self.folder.llm_log, model=model, on_usage=on_usage,
                                         guard=lambda: self.ctx.guard_llm_budget(), script=script,
                                         seed=self.config.search.seed)

        clients = {m: client(m) for m in llm.ensemble}
        if len(clients) == 1:
            return next(iter(clients.values())), None
        from archlab.llm.ensemble import Ensemble

        default = clients.get(llm.default_model) or client(llm.default_model)
        return default, Ensemble(clients, self.folder.llm_log, llm.local_usd_per_hour)

    def _memory(self) -> Any:
        """The workspace's vector memory: nothing is opened or loaded until an agent reads it."""
        if not self.config.memory.enabled:
            return None
        from archlab.memory.embeddings import get_embedder
        from archlab.memory.vector import VectorMemory

        get_embedder(self.config.memory.embeddings)  # a bad spec fails here, before any experiment
        return VectorMemory.for_config(self.config, self.folder.root.parent)

    def close_memory(self) -> None:
        """A team memory (a chromadb server) gets this campaign's experiments now; an
        embedded one indexes them when it is next read."""
        memory = self.ctx.memory
        if memory is None or not memory.opened and not memory.url:
            return
        try:
            if memory.url and self.ctx.recorded is None:
                from archlab.agents.evidence import guarded

                guarded(self.ctx, "team memory sync", lambda: memory.sync(self.folder.root, self.ledger), int)
        finally:
            memory.close()

    @property
    def graph(self) -> Any:
        """Built once, by the first of the parallel experiment threads to ask: several threads
        compiling it at once opened several checkpointers on one new file, and one of them
        failed switching it to WAL ("database is locked"), recording its experiment as failed."""
        with self._graph_lock:
            if self._graph is None:
                from archlab.agents.graph import compile_graph

                self._graph = compile_graph(self.ctx, self.folder.checkpoints)
            return self._graph

    # -- one experiment -------------------------------------------------------
    def run_experiment(self, exp_id: int) -> dict[str, Any]:
        """Start or continue experiment `exp_id`'s graph thread to its end."""
        cfg = {"configurable": {"thread_id": str(exp_id)}, "recursion_limit": 200}
        if self.graph.get_state(cfg).values:
            # A checkpoint exists: continue from it. Steps that finished before a kill
            # are not run again (their writes are stored); a finished thread is a no-op.
            return self.graph.invoke(None, cfg)
        row = self.ledger.get(exp_id)
        start: dict[str, Any] = {"experiment": exp_id, "origin": row.origin, "rejections": [], "proposals": 0,
                                 "code_calls": 0, "repairs": 0, "arm": (row.proposal or {}).get("arm")}
        given = (row.proposal or {}).get("code")
        if given:  # baselines and `archlab eval`: the code is given
            start.update(code=given, proposal={k: v for k, v in row.proposal.items() if k != "code"})
        self.ledger.update(exp_id, status="running", started=time.time())
        return self.graph.invoke(start, cfg)

    def record_crash(self, exp_id: int, exc: BaseException) -> None:
        """A bug in a step must not stop the campaign: record it (traceback in
        experiments/N/error.log, secrets scrubbed) and go on."""
        from archlab.llm import scrub  # secrets never reach runs/

        log = self.folder.experiment(exp_id) / "error.log"
        log.write_text(scrub("".join(traceback.format_exception(exc)), key_shapes=True))
        reason = scrub(f"internal error: {exc!r}", key_shapes=True)
        self.ledger.update(exp_id, status="failed", failure_reason=f"{reason} (see {log})", finished=time.time())
        self.ledger.event(exp_id, "experiment.failed", {"reason": reason}, key=f"{exp_id}:finished")

    # -- budgets --------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Evaluated experiments to run: the config's, else the task's default."""
        return self.config.budget.experiments or self.ctx.task.default_budget

    def stop_reason(self) -> str | None:
        """Why no new experiment may start, or None."""
        b, spend = self.config.budget, self.ledger.spend()
        counted = len(self.ledger.experiments(status=[*IN_FLIGHT, "done", "failed"], origin=["campaign"]))
        if counted >= self.budget:
            return f"experiment budget reached ({self.budget})"
        if b.hours is not None and spend["wall_s"] >= b.hours * 3600:
            return f"wall-clock budget reached ({b.hours} h)"
        if b.gpu_hours is not None and spend["gpu_s"] >= b.gpu_hours * 3600:
            return f"GPU-hour budget reached ({b.gpu_hours} h)"
        try:
            self.ctx.guard_llm_budget()
        except BudgetExceeded as exc:
            return str(exc)
        return None

    def _seed_baselines(self) -> list[int]:
        if not self.config.search.baselines or self.ledger.get_meta("baselines_allocated"):
            return []
        with self.ledger.transaction():  # a kill here must not allocate the baselines twice
            ids = [self.ledger.allocate("baseline", {"name": c.name, "motivation": c.motivation or "baseline",
                                                     "design": c.name, "code": c.code, "genome": c.genome},
                                        name=c.name) for c in self.ctx.task.seeds()]
            self.ledger.set_meta("baselines_allocated", ids)
        return ids

    # -- the loop ---------------------------------------------------------------
    def run(self, on_progress: ProgressFn | None = None) -> Summary:
        self._take_lock()
        self.ctx.task.prepare(self.folder.root)
        self.ledger.event(None, "campaign.start", {"pid": os.getpid(), "isolation": self.isolation})
        self.ledger.set_meta("isolation", self.isolation)
        queue = deque(e.id for e in self.ledger.experiments(status=IN_FLIGHT))  # resume first
        queue += [i for i in self._seed_baselines() if i not in queue]
        futures: dict[Future, int] = {}
        stop: str | None = None
        paused: ModelUnavailable | None = None
        tick = time.time()
        pool = ThreadPoolExecutor(self.config.search.parallel, thread_name_prefix="exp")
        try:
            while True:
                stop = stop or self.stop_reason()
                while len(futures) < self.config.search.parallel and (queue or stop is None):
                    exp_id = queue.popleft() if queue else self._allocate()
                    futures[pool.submit(self.run_experiment, exp_id)] = exp_id
                    stop = stop or self.stop_reason()
                if not futures:
                    break
                if on_progress:
                    on_progress(self.snapshot(len(futures)))
                finished, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    exp_id = futures.pop(fut)
                    exc = fut.exception()
                    if isinstance(exc, BudgetExceeded):
                        stop = f"{exc} (experiment #{exp_id} left to resume)"
                        queue.clear()
                    elif isinstance(exc, ModelUnavailable):
                        # Nobody's fault in the experiment: it stays in flight, resumable, nothing recorded.
                        if paused is None:
                            paused = exc
                            stop = self._pause(exc, exp_id)
                        queue.clear()
                    elif exc is not None:
                        self.record_crash(exp_id, exc)
                now = time.time()
                self.ledger.add_spend(wall_s=now - tick)
                tick = now
        except KeyboardInterrupt:  # stop now: in-flight experiments resume from their checkpoints
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        verified = None
        if self.config.verify.top and paused is None and not self.ledger.experiments(status=IN_FLIGHT):
            verified = self.verification().run(on_progress)  # exploration is over: verify what it found
        summary = self.summary(stop or "finished")
        summary.verification = verified
        if paused is not None:
            summary.paused = "unreachable" if paused.resumable else "refused"
        self.ledger.event(None, "campaign.stop", {"reason": summary.stop_reason, "paused": summary.paused,
                                                  "verification": verified})
        self.folder.lock.unlink(missing_ok=True)
        self.close_memory()
        self.ctx.backend.close()
        return summary

    def _allocate(self) -> int:
        """The next campaign experiment; every 1/control-th one (interleaved) is the random-control
        arm's, decided here and kept on its row so resume and replay give it the same arm."""
        share = self.config.search.control
        if share:
            i = len(self.ledger.experiments(origin=["campaign"]))
            if int((i + 1) * share) > int(i * share):
                return self.ledger.allocate("campaign", {"arm": "control"})
        return self.ledger.allocate("campaign")

    def verification(self) -> Any:
        from archlab.verification import Verification

        return Verification(self.ctx)

    def _pause(self, exc: ModelUnavailable, exp_id: int) -> str:
        kind = "model unreachable" if exc.resumable else "model refused"
        why = (f"{kind}: {exc} (experiment #{exp_id} is left as it was; nothing was recorded as failed "
               f"and the budget is untouched); continue with: archlab resume {self.folder.id}")
        self.ledger.event(exp_id, "campaign.paused", {"reason": str(exc)[:1000], "kind": kind})
        return why

    def _take_lock(self) -> None:
        lock = self.folder.lock
        pid = self.folder.running_pid()
        if pid is not None and pid != os.getpid():
            raise ArchlabError(f"campaign {self.folder.id} is already running (pid {pid}); stop it first")
        lock.write_text(str(os.getpid()))

    # -- reading ------------------------------------------------------------------
    def snapshot(self, in_flight: int) -> dict[str, Any]:
        best = self.ctx.best()
        return {"counts": self.ledger.counts(), "in_flight": in_flight, "budget": self.budget,
                "best": {"id": best.id, "name": best.name, "score": best.score} if best else None,
                "spend": self.ledger.spend(), "live": dict(self.ctx.live)}

    def summary(self, stop_reason: str) -> Summary:
        best = self.ctx.best()
        return Summary(self.folder.id, stop_reason, self.ledger.counts(), self.ledger.spend(),
                       best.to_dict() if best else None)
