"""Campaigns recorded before the package was reorganised (tests/fixtures/campaigns/,
made by tests/fixtures/record_campaigns.py) replay with zero divergence: an offline
nb201 evolution campaign, an lm campaign at `tiny` and a scripted-LLM nb201 campaign.
A move of code that changes a prompt, a gate decision, a strategy's draw or a
recorded field shows up here as a divergence at its step."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from archlab.memory.ledger import Ledger
from archlab.replay import replay

FIXTURES = Path(__file__).parent / "fixtures" / "campaigns"
RECORDED = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").exists())


def test_the_three_recorded_campaigns_are_there():
    assert RECORDED == ["lm-tiny", "nb201-offline", "nb201-scripted-llm"]


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_campaign_replays_with_zero_divergence(name: str, tmp_path: Path, nb201_table: Path):
    workspace = tmp_path / "runs"
    folder = workspace / name
    shutil.copytree(FIXTURES / name, folder)
    config = folder / "config.json"
    config.write_text(config.read_text().replace("@NB201_TABLE@", str(nb201_table))
                      .replace("@WORKSPACE@", str(workspace)))
    recorded = [e.id for e in Ledger(folder / "ledger.sqlite").experiments()]
    report = replay(workspace, name)
    assert report.ok, str(report.divergence)
    assert report.experiments == recorded and len(recorded) >= 5
