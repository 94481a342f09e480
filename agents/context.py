"""What every node of the graph works with: config, campaign folder, ledger,
task pack, sandbox backend and (when a model is set) the LLM client, or, for an
ensemble, the client each experiment was given (`model_for`)."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archlab.errors import BudgetExceeded

if TYPE_CHECKING:
    from archlab.campaign_folder import CampaignFolder
    from archlab.config import Config
    from archlab.llm import LLMClient
    from archlab.memory.ledger import Ledger
    from archlab.sandbox.base import Backend
    from archlab.tasks.base import TaskPack


def job_limits(task: Any, sandbox: Any, kind: str) -> Any:
    """The task's default limits for the step ("check" or "train"), with what the sandbox config sets on top."""
    from dataclasses import replace

    wall = sandbox.check_wall_s if kind == "check" else sandbox.train_wall_s
    return replace(task.limits(kind), gpus=[],
                   **{k: v for k, v in (("wall_time_s", wall), ("memory_mb", sandbox.memory_mb),
                                        ("cpus", sandbox.cpus)) if v is not None})


def evaluated_in(ledger: Ledger, genome: bool = False, order: str = "id") -> list[Any]:
    """A ledger's evaluated experiments in `order`; with `genome`, only those that carry one (the offline
    strategies and the MAP-Elites archive). The random-control arm's samples stay out: the arms are
    compared, so neither may feed the other's search."""
    return [e for e in ledger.experiments(status=["done"], order=order)
            if e.score is not None and (e.proposal or {}).get("arm") != "control"
            and (not genome or (e.proposal or {}).get("genome"))]


@dataclass
class LabContext:
    config: Config
    folder: CampaignFolder
    ledger: Ledger
    task: TaskPack
    backend: Backend
    llm: LLMClient | None = None
    live: dict[int, dict[str, Any]] = field(default_factory=dict)  # last progress event per experiment
    recorded: Any = None  # replay: a RecordedRun answering what the original run saw and got
    memory: Any = None    # the workspace's VectorMemory (opened lazily), None when [memory] enabled = false

    gpu_slots: Any = None  # sandbox.gpus.GpuSlots of this machine's GPUs
    results: Any = None    # the workspace's memory.results.ResultCache; None: every training runs
    ensemble: Any = None   # llm.ensemble.Ensemble where [llm] models names several; `llm` is then the default

    def model_for(self, experiment: int) -> LLMClient:
        """The client for one experiment's calls: the ensemble's pick for it (remembered, so
        resume and replay keep it), else the campaign's one model."""
        if self.ensemble is not None:
            client = self.ensemble.client_for(self, experiment)
            if client is not None:
                return client
        assert self.llm is not None, "model_for needs the llm strategy"
        return self.llm

    def result_key(self, task: Any, code: str, seed: int) -> str | None:
        """The result cache's key of training `code` under `seed` at `task`'s fidelity, or None
        where the task's results are not cached."""
        fidelity = task.fidelity()
        if fidelity is None:
            return None
        from archlab.code_hashes import text_hash
        from archlab.memory.results import result_key

        return result_key(fidelity, text_hash(code), seed)

    def gpus_per_job(self) -> int:
        sandbox = self.config.sandbox
        if sandbox.gpus_per_job is not None:
            return sandbox.gpus_per_job
        return 1 if self.task.uses_gpu and (sandbox.backend == "ray" or self.gpu_slots.gpus) else 0

    def remember(self, experiment: int, kind: str, attempt: int, compute: Any) -> Any:
        """What an agent was shown (ids of experiments), logged as an event so a replay
        rebuilds the same prompt whatever order parallel experiments finished in."""
        value = self.recorded.seen(experiment, kind, attempt) if self.recorded is not None else None
        if value is None:
            value = compute()
        self.ledger.event(experiment, f"seen.{kind}", {"attempt": attempt, "value": value})
        return value

    def limits(self, kind: str) -> Any:
        return job_limits(self.task, self.config.sandbox, kind)

    @property
    def strategy(self) -> str:
        return self.config.strategy

    def can_repair(self, state: Any) -> bool:
        """Only a model can fix code, and only its own: given code is judged as is."""
        return (self.strategy == "llm" and state.get("origin") == "campaign" and state.get("arm") != "control"
                and state.get("repairs", 0) < self.config.search.max_repairs)

    def rng(self, experiment: int, *salt: Any) -> random.Random:
        """Randomness per experiment from the campaign seed, never from time."""
        key = f"{self.config.search.seed}:{experiment}:" + ":".join(map(str, salt))
        return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))

    def seed(self, experiment: int, *salt: Any) -> int:
        return self.rng(experiment, "seed", *salt).randrange(2**31)

    def guard_llm_budget(self) -> None:
        """Raised before a model call once tokens or USD are spent: the step is
        left unfinished (resumable with a larger budget), nothing is recorded as failed."""
        budget, spend = self.config.budget, self.ledger.spend()
        if budget.tokens is not None and spend["tokens"] >= budget.tokens:
            raise BudgetExceeded(f"token budget reached ({spend['tokens']:,} of {budget.tokens:,})")
        if budget.usd is not None and spend["usd"] >= budget.usd:
            raise BudgetExceeded(f"USD budget reached (${spend['usd']:.4f} of ${budget.usd:.2f})")

    def evaluated(self, experiment: int, genome: bool = False, order: str = "id") -> list[Any]:
        """The campaign's evaluated experiments other than `experiment` (see `evaluated_in`)."""
        return [e for e in evaluated_in(self.ledger, genome, order) if e.id != experiment]

    def best(self, exclude: int | None = None, origin: tuple[str, ...] | None = None) -> Any:
        """The best evaluated experiment by the task's metric."""
        rows = [e for e in self.ledger.experiments(status=["done"], origin=origin) if e.id != exclude]
        ranked = self.task.ranked(rows, tiebreak=lambda e: e.id)
        return ranked[0] if ranked else None
