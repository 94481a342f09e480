"""Model ensembles: `[llm] models = [...]` and the bandit that gives each campaign
experiment to one of them, by improvements per dollar.

Definitions (the report, `show`, the chat and the bandit all use these):
- An experiment is a model's when the bandit picked that model for it (its
  `seen.model` ledger event). Baselines, given code and the random-control arm
  belong to no model.
- It counts once finished (done, failed or duplicate). It is valid when it was
  evaluated (done, with a score).
- It improved when its score beat the incumbent: the campaign's best score
  (baselines included) among the experiments finished when the model was picked,
  which the pick records. With none finished yet (no baselines) there is nothing
  to beat: no improvement. `gain` is the margin over the incumbent, in metric units.
- Its cost is what its model calls cost: their USD (llm.jsonl `cost_usd`), or, for
  a model litellm cannot price (every call $0: a local server), their seconds
  (`latency_s`) at `[llm] local_usd_per_hour`. yield = improvements / cost.

The rule: each model is tried once first, in the order listed (round robin on
picks, so parallel first experiments spread out); then Thompson sampling: each
model draws an improvement rate from Beta(1 + improvements, 1 + experiments -
improvements), divides it by its mean cost per experiment, and the highest wins.
The draw uses the experiment's seeded generator, and the pick is remembered in
the ledger, so resume and replay give the experiment the same model."""
from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KIND = "model"  # the ledger event `seen.model`: {"model": ..., "incumbent": score or None}
COUNTED = ("done", "failed", "duplicate")


@dataclass
class ModelYield:
    model: str
    picked: int = 0         # experiments given to it, finished or not
    experiments: int = 0    # of those, finished
    valid: int = 0          # evaluated, with a score
    improvements: int = 0   # beat the incumbent when it was picked
    gain: float = 0.0       # the margins of those improvements, in metric units
    best: float | None = None  # its best score
    usd: float = 0.0        # of its finished experiments' model calls
    seconds: float = 0.0
    calls: int = 0
    local: bool = True      # every call cost $0: billed by its seconds
    cost: float = 0.0       # USD, or USD-equivalent for a local model

    @property
    def per_experiment(self) -> float | None:
        return self.cost / self.experiments if self.experiments else None

    @property
    def yield_(self) -> float | None:
        """Improvements per dollar; None at no cost."""
        return self.improvements / self.cost if self.cost > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_per_experiment": self.per_experiment, "improvements_per_usd": self.yield_}


class CallTally:
    """The cost of each (experiment, model) from llm.jsonl, read on from where it stopped,
    so a pick per experiment does not read the whole log again."""

    def __init__(self, path: Path) -> None:
        self.path, self._offset = Path(path), 0
        self.by: dict[tuple[int, str], list[float]] = {}  # -> [usd, seconds, calls]
        self._lock = threading.Lock()

    def update(self) -> CallTally:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except OSError:
                return self
            end = data.rfind(b"\n") + 1  # a line being written is read next time
            self._offset += end
            for line in data[:end].splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("experiment") is None:
                    continue  # the chat, the verification stage: no experiment's
                cell = self.by.setdefault((rec["experiment"], str(rec.get("model"))), [0.0, 0.0, 0])
                cell[0] += float(rec.get("cost_usd") or 0.0)
                cell[1] += float(rec.get("latency_s") or 0.0)
                cell[2] += 1
        return self

    def of(self, experiment: int, model: str) -> tuple[float, float, int]:
        usd, seconds, calls = self.by.get((experiment, model), (0.0, 0.0, 0))
        return usd, seconds, int(calls)


def choices(ledger: Any) -> dict[int, dict[str, Any]]:
    """experiment -> its pick ({"model", "incumbent"}); a step run again: the last."""
    return {ev["experiment"]: ev["data"]["value"] for ev in ledger.events(kind=f"seen.{KIND}")
            if ev["data"] and isinstance(ev["data"].get("value"), dict)}


def yields(models: list[str], ledger: Any, task: Any, tally: CallTally, usd_per_hour: float) -> list[ModelYield]:
    """Each model's record in this campaign, in `models` order (then any other model picked)."""
    picks = choices(ledger)
    order = list(models) + sorted({p["model"] for p in picks.values()} - set(models))
    out = {m: ModelYield(m) for m in order}
    rows = {e.id: e for e in ledger.experiments()}
    for exp, pick in picks.items():
        y, e = out[pick["model"]], rows.get(exp)
        y.picked += 1
        if e is None or e.status not in COUNTED:
            continue
        usd, seconds, calls = tally.of(exp, y.model)
        y.experiments += 1
        y.usd, y.seconds, y.calls = y.usd + usd, y.seconds + seconds, y.calls + calls
        score = task.value_of(e) if e.status == "done" else None
        if score is None:
            continue
        y.valid += 1
        y.best = score if y.best is None or task.better(score, y.best) else y.best
        incumbent = pick.get("incumbent")
        if incumbent is not None and task.better(score, incumbent):
            y.improvements += 1
            y.gain += abs(score - incumbent)
    for y in out.values():
        y.local = y.usd == 0
        y.cost = y.seconds * usd_per_hour / 3600 if y.local else y.usd
    return list(out.values())


def pick(models: list[str], record: list[ModelYield], rng: random.Random) -> str:
    """The bandit's rule (see the module docstring): round robin until each model was picked
    once, then Thompson sampling on improvements per unit of cost."""
    stats = {y.model: y for y in record}
    for m in models:
        if not stats.get(m) or not stats[m].picked:
            return m
    costs = {m: stats[m].per_experiment for m in models}
    known = [c for c in costs.values() if c is not None]
    fill = sum(known) / len(known) if known else 0.0  # a model with nothing finished: the others' mean
    top = max([fill, *known])
    floor = top * 1e-3 if top > 0 else 1.0  # a free model is far ahead, not infinitely
    best, best_index = models[0], -1.0
    for m in models:  # config order: ties keep the first
        y = stats[m]
        theta = rng.betavariate(1 + y.improvements, 1 + y.experiments - y.improvements)
        index = theta / max(costs[m] if costs[m] is not None else fill, floor)
        if index > best_index:
            best, best_index = m, index
    return best


class Ensemble:
    """Several clients, one per model of `[llm] models`, and which one each experiment gets."""

    def __init__(self, clients: dict[str, Any], log_path: Path, usd_per_hour: float) -> None:
        self.clients, self.models = clients, list(clients)
        self.tally, self.usd_per_hour = CallTally(log_path), usd_per_hour
        self._picked: dict[int, str] = {}
        self._lock = threading.Lock()  # parallel first picks see each other (round robin)

    def client_for(self, ctx: Any, experiment: int) -> Any:
        """The experiment's model: picked once, then the same for every step, on resume (read back
        from the ledger) and on replay (from the record); None: it belongs to no model."""
        row = ctx.ledger.get(experiment)
        if row is None or row.origin != "campaign" or (row.proposal or {}).get("arm") == "control":
            return None
        with self._lock:
            name = self._picked.get(experiment)
            if name is None:
                earlier = choices_of(ctx.ledger, experiment)  # a resumed process: picked before the kill
                if earlier is not None and earlier in self.clients:
                    name = earlier
                else:
                    name = ctx.remember(experiment, KIND, 0, lambda: self._choose(ctx, experiment))["model"]
                    if name not in self.clients:  # a replay whose record names a model not configured
                        from archlab.errors import ConfigError

                        raise ConfigError(f"experiment #{experiment} was given model {name!r}, which is not "
                                          f"in [llm] models {self.models}")
                self._picked[experiment] = name
        return self.clients[name]

    def _choose(self, ctx: Any, experiment: int) -> dict[str, Any]:
        best = ctx.best(exclude=experiment)
        record = self.record(ctx.ledger, ctx.task)
        return {"model": pick(self.models, record, ctx.rng(experiment, KIND)),
                "incumbent": best.score if best is not None else None}

    def record(self, ledger: Any, task: Any) -> list[ModelYield]:
        return yields(self.models, ledger, task, self.tally.update(), self.usd_per_hour)


def choices_of(ledger: Any, experiment: int) -> str | None:
    events = [ev for ev in ledger.events(experiment, f"seen.{KIND}") if ev["data"]]
    value = events[-1]["data"].get("value") if events else None
    return value.get("model") if isinstance(value, dict) else None


def campaign_yields(config: dict[str, Any], ledger: Any, task: Any, log_path: Path) -> list[ModelYield] | None:
    """A campaign folder's model record (report, show, chat); None unless it ran an ensemble."""
    llm = config.get("llm") or {}
    models = list(llm.get("models") or [])
    if len(models) < 2 and not choices(ledger):
        return None
    return yields(models, ledger, task, CallTally(log_path).update(), float(llm.get("local_usd_per_hour", 1.0)))

