"""One candidate from a file: `archlab check` (gate + sandboxed check, nothing
recorded) and `archlab eval` (the whole graph from the gate, recorded in the
workspace's eval campaign so a second eval of the same code trains nothing)."""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.campaign_folder import CampaignFolder
from archlab.config import Config


@dataclass
class Verdict:
    file: Path
    accepted: bool
    stage: str                   # static | gate | check | ok
    reasons: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        head = f"{self.file}: {'ACCEPTED' if self.accepted else 'REJECTED at ' + self.stage}"
        lines = [head, *[f"  - {r}" for r in self.reasons]]
        for key, value in self.report.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def eval_folder(config: Config) -> CampaignFolder:
    """The workspace's standing campaign for single evaluations of one task setting:
    the same code under another dataset, table or preset is a different experiment."""
    setting = json.dumps({"preset": config.task.preset, **config.task.options}, sort_keys=True, default=str)
    root = Path(config.workspace) / f"eval-{config.task.name}-{hashlib.sha256(setting.encode()).hexdigest()[:8]}"
    folder = CampaignFolder(root)
    if not folder.config.exists():
        (root / "experiments").mkdir(parents=True, exist_ok=True)
        folder.write_config(config.model_dump(mode="json"))
    return folder


def check_file(config: Config, path: Path) -> Verdict:
    from archlab.campaign import backend_options
    from archlab.code_hashes import hashes
    from archlab.memory.ledger import Ledger
    from archlab.sandbox import get_backend
    from archlab.tasks import get_task

    task = get_task(config.task.name, config.task.options, config.task.preset)
    task.validate()
    code = path.read_text()
    errors = task.static_errors(code)
    if errors:
        return Verdict(path, False, "static", errors)
    h = hashes(code)
    folder = eval_folder(config)
    if folder.ledger.exists():
        ledger = Ledger(folder.ledger)
        hit = ledger.find_hash(-1, text_hash=h.text) or ledger.find_hash(-1, ast_hash=h.ast)
        ledger.close()
        if hit is not None:
            return Verdict(path, False, "gate", [f"duplicate of experiment #{hit.id} ({hit.name}) in {folder.root}"])
    with tempfile.TemporaryDirectory(prefix="archlab-check-") as tmp:
        task.prepare(Path(tmp))
        from archlab.agents.context import job_limits

        limits = job_limits(task, config.sandbox, "check")
        job = task.check_job(code, Path(tmp) / "check", config.search.seed, limits)
        backend = get_backend(config.sandbox.backend, **backend_options(config.sandbox))
        try:
            result = backend.run(job)
        finally:
            backend.close()
    report = {k: v for k, v in (result.result or {}).items() if k not in ("status", "reason")}
    if isinstance(report.get("behaviour"), dict):  # thousands of output values: their shape is what a user reads
        b = report["behaviour"]
        report["behaviour"] = f"{len(b.get('values', []))} output values over {b.get('probes')} probes"
    report["ast_hash"] = h.ast[:16]
    if not result.ok:
        return Verdict(path, False, "check", [f"{result.status}: {result.reason}"], report)
    return Verdict(path, True, "ok", [], report)


def eval_file(config: Config, path: Path) -> Any:
    from archlab.campaign import Campaign
    from archlab.memory.ledger import IN_FLIGHT

    code = path.read_text()
    campaign = Campaign(eval_folder(config), config, untrusted=True)  # the user's file: hostile like any
    campaign.ctx.task.prepare(campaign.folder.root)
    for unfinished in campaign.ledger.experiments(status=IN_FLIGHT):  # an eval killed earlier: finish it first
        campaign.run_experiment(unfinished.id)
    exp = campaign.ledger.allocate("eval", {"name": path.stem, "motivation": f"user candidate {path}",
                                            "design": path.name, "code": code}, name=path.stem)
    campaign.run_experiment(exp)
    campaign.close_memory()
    return campaign.ledger.get(exp)


def duplicate_reason(config: Config, experiment: int) -> str | None:
    """Why the gate called an evaluated file a duplicate (the neighbour and, for behaviour,
    the distance and the tolerance), from the eval campaign's ledger."""
    from archlab.memory.ledger import Ledger

    ledger = Ledger(eval_folder(config).root / "ledger.sqlite")
    found = ledger.events(experiment=experiment, kind="gate.duplicate")
    return found[-1]["data"]["reason"] if found else None
