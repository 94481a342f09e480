"""The campaign folder runs/ID/: everything a resume, a replay or a report needs."""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from archlab.errors import ArchlabError


@dataclass(frozen=True)
class CampaignFolder:
    root: Path

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints.sqlite"

    @property
    def llm_log(self) -> Path:
        return self.root / "llm.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "campaign.pid"

    def running_pid(self) -> int | None:
        """The pid named in the campaign's lock while that process lives (the campaign runs), else None."""
        try:
            pid = int(self.lock.read_text() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and Path(f"/proc/{pid}").exists() else None

    def experiment(self, exp_id: int) -> Path:
        path = self.root / "experiments" / str(exp_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @classmethod
    def create(cls, workspace: Path, task: str) -> CampaignFolder:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = Path(workspace) / f"{task}-{stamp}-{secrets.token_hex(2)}"
        (root / "experiments").mkdir(parents=True)
        return cls(root)

    @classmethod
    def open(cls, workspace: Path, campaign_id: str) -> CampaignFolder:
        root = Path(campaign_id)
        if not (root / "config.json").exists():
            root = Path(workspace) / campaign_id
        if not (root / "config.json").exists():
            known = ", ".join(c.id for c in list_campaigns(workspace)[-5:]) or "none"
            raise ArchlabError(f"no campaign {campaign_id!r} under {workspace}/ (recent: {known}); see `archlab ls`")
        return cls(root)

    def write_config(self, snapshot: dict) -> None:
        self.config.write_text(json.dumps(snapshot, indent=2, default=str))

    def read_config(self) -> dict:
        data = json.loads(self.config.read_text())
        search = data.get("search")
        if isinstance(search, dict):  # written before these settings existed: what the surrogate did then
            search.setdefault("candidates", "mutants")
            search.setdefault("learn_from_workspace", False)
            search.setdefault("restart_after", 0)
        return data


def list_campaigns(workspace: Path) -> list[CampaignFolder]:
    workspace = Path(workspace)
    if not workspace.is_dir():
        return []
    found = [CampaignFolder(p) for p in workspace.iterdir() if (p / "config.json").exists()]
    return sorted(found, key=lambda c: c.config.stat().st_mtime)
