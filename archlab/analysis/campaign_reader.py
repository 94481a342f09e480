"""A finished (or running) campaign opened for reading: its ledger, task and
files, and the series a report, a plot or the analyst asks for. Nothing here
writes to the campaign."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from archlab.analysis.stats import Interval, mean_ci
from archlab.campaign_folder import CampaignFolder, list_campaigns
from archlab.memory.ledger import Experiment, Ledger
from archlab.tasks.base import seed_values


@dataclass
class CampaignReader:
    folder: CampaignFolder
    ledger: Ledger
    config: dict[str, Any]
    task: Any  # TaskPack: metric, report_metric, higher_is_better

    @classmethod
    def open(cls, folder: CampaignFolder) -> CampaignReader:
        from archlab.tasks import get_task

        config = folder.read_config()
        task_cfg = dict(config.get("task") or {})
        name, preset = task_cfg.pop("name", "lm"), task_cfg.pop("preset", None)
        try:
            task = get_task(name, task_cfg, preset)
        except Exception:  # an option this version rejects must not hide the results
            task = get_task(name)
        return cls(folder, Ledger(folder.ledger), config, task)

    @property
    def id(self) -> str:
        return self.folder.id

    @property
    def metric(self) -> str:
        return self.task.metric

    @property
    def higher(self) -> bool:
        return bool(self.task.higher_is_better)

    def direction(self, metric: str) -> bool:
        """Whether higher is better: the task declares it (UnknownMetric otherwise)."""
        return self.task.higher(metric)

    # -- experiments --------------------------------------------------------------------------
    @cached_property
    def rows(self) -> list[Experiment]:
        return self.ledger.experiments()

    def refresh(self) -> None:
        """Read the ledger again (a campaign may still be running)."""
        self.__dict__.pop("rows", None)

    def get(self, exp_id: int) -> Experiment | None:
        return next((e for e in self.rows if e.id == exp_id), None)

    def value(self, e: Experiment, metric: str | None = None) -> float | None:
        """The metric of a finished experiment: the mean over seeds where there are several."""
        return self.task.value_of(e, metric or self.metric)

    def interval(self, e: Experiment, metric: str | None = None) -> Interval | None:
        return mean_ci(seed_values(e.metrics, metric or self.metric))

    def ranked(self, metric: str | None = None, higher: bool | None = None,
               origin: tuple[str, ...] | None = None) -> list[Experiment]:
        """Evaluated experiments (done, not reused duplicates) best first by `metric` (the task's ranking)."""
        metric = metric or self.metric
        rows = [e for e in self.rows if e.status == "done" and (origin is None or e.origin in origin)]
        return self.task.ranked(rows, lambda e: self.value(e, metric), metric=metric, higher=higher,
                                tiebreak=lambda e: e.id)

    def best(self, origin: tuple[str, ...] | None = None) -> Experiment | None:
        ranked = self.ranked(origin=origin)
        return ranked[0] if ranked else None

    def metrics_available(self) -> list[str]:
        names = {k for e in self.rows for k, v in (e.metrics or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return sorted(names)

    def code(self, e: Experiment) -> str | None:
        if e.code_path and Path(e.code_path).exists():
            return Path(e.code_path).read_text()
        code = (e.proposal or {}).get("code")
        if code:
            return code
        if e.duplicate_of is not None and e.duplicate_of != e.id:
            twin = self.get(e.duplicate_of)
            return self.code(twin) if twin else None
        return None

    def result(self, e: Experiment) -> dict[str, Any] | None:
        """experiments/N/metrics.json: the harness's full result (metrics, curves)."""
        path = self.folder.root / "experiments" / str(e.id) / "metrics.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def curves(self, e: Experiment) -> dict[str, list[list[float]]]:
        curves = (self.result(e) or {}).get("curves") or {}
        return {k: v for k, v in curves.items() if isinstance(v, list) and v}

    def children(self, exp_id: int) -> list[Experiment]:
        return [e for e in self.rows if e.parent == exp_id and e.id != exp_id]

    def ancestors(self, e: Experiment) -> list[Experiment]:
        chain, seen = [], {e.id}
        while e.parent is not None and e.parent not in seen:
            parent = self.get(e.parent)
            if parent is None:
                break
            chain.append(parent)
            seen.add(parent.id)
            e = parent
        return chain

    # -- series --------------------------------------------------------------------------------
    def finished_campaign(self) -> list[Experiment]:
        rows = [e for e in self.rows if e.origin == "campaign" and e.status in ("done", "failed")]
        return sorted(rows, key=lambda e: (e.finished or e.created, e.id))

    def progress(self, axis: str = "experiments") -> tuple[list[float], list[float], str]:
        """(x, score, x label) for each scored campaign experiment in the order they finished:
        x counts finished experiments, or cumulative GPU-hours (train seconds when no GPU was used)."""
        rows = self.finished_campaign()
        gpu = any(e.gpus for e in rows)
        xs, ys, total = [], [], 0.0
        for i, e in enumerate(rows, 1):
            total += (e.train_s or 0) * (e.gpus or 0) / 3600 if gpu else (e.train_s or 0)
            score = self.value(e)
            if e.status == "done" and score is not None:
                xs.append(float(i) if axis == "experiments" else total)
                ys.append(score)
        if axis == "experiments":
            return xs, ys, "experiments finished"
        return xs, ys, "GPU-hours" if gpu else "train seconds (no GPU used)"

    def failures(self) -> dict[str, list[int]]:
        """Failed experiments grouped by the kind of reason (the text before its first colon)."""
        out: dict[str, list[int]] = {}
        for e in self.rows:
            if e.status == "failed":
                reason = (e.failure_reason or "unknown").strip()
                head = reason.split(":", 1)[0].strip() if ":" in reason else reason
                out.setdefault(head[:60] or "unknown", []).append(e.id)
        return dict(sorted(out.items(), key=lambda kv: -len(kv[1])))

    def gate(self) -> dict[str, Any]:
        """What the gate saved: duplicates refused before compute, by layer, and near-duplicates."""
        dups = self.ledger.events(kind="gate.duplicate")
        layers: dict[str, int] = {}
        for ev in dups:
            layer = (ev.get("data") or {}).get("layer", "?")
            layers[layer] = layers.get(layer, 0) + 1
        near = self.ledger.count_events("gate.near_duplicate")  # embedding novelty or the LLM judge
        trained = [e.train_s for e in self.rows if e.status == "done" and e.train_s]
        mean_train = sum(trained) / len(trained) if trained else 0.0
        return {"reused": self.ledger.counts().get("reused", 0), "by_layer": layers, "near_duplicates": near,
                "train_s_saved": mean_train * (len(dups) + near), "mean_train_s": mean_train}

    def chat_spend(self) -> dict[str, float]:
        """The analyst chat's model calls on this campaign (steps `chat:*` in llm.jsonl)."""
        return llm_spend(self.folder.llm_log, prefix="chat:")

    def model_yields(self) -> list[Any] | None:
        """An ensemble's record per model (llm/ensemble.py's ModelYield); None: one model or none."""
        from archlab.llm.ensemble import campaign_yields

        return campaign_yields(self.config, self.ledger, self.task, self.folder.llm_log)

    def summary_line(self) -> str:
        best = self.best()
        counts = self.ledger.counts()
        head = (f"{self.id}: task {self.task.name}, metric {self.metric} "
                f"({'higher' if self.higher else 'lower'} is better); "
                f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed, {counts.get('reused', 0)} reused")
        if best is not None:
            head += f"; best #{best.id} {best.name} {self.metric}={self.value(best):.4g}"
        return head


def llm_spend(path: Path, prefix: str | None = None) -> dict[str, float]:
    out = {"calls": 0, "tokens": 0, "usd": 0.0}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if prefix is not None and not str(rec.get("step", "")).startswith(prefix):
            continue
        out["calls"] += 1
        out["tokens"] += int(rec.get("prompt_tokens") or 0) + int(rec.get("completion_tokens") or 0)
        out["usd"] += float(rec.get("cost_usd") or 0.0)
    return out


def open_campaigns(workspace: Path, campaign: str | None = None) -> list[CampaignReader]:
    """One campaign (by id or folder), or every campaign of the workspace."""
    if campaign:
        return [CampaignReader.open(CampaignFolder.open(Path(workspace), campaign))]
    return [CampaignReader.open(f) for f in list_campaigns(Path(workspace))]
