"""The verification stage, its statistics and the random-control arm, on the synthetic `noise`
task (its metric is seeded noise plus a planted effect), through the real campaign loop and
process sandbox: seeds shared by every subject, verdicts that hold their error rate, kill -9
and resume, the workspace result cache, show / report / chat, replay."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ARCHLAB
from scipy import stats

from archlab.analysis.findings import BETTER, arms, verified_findings
from archlab.analysis.stats import difference, holm
from archlab.campaign import Campaign
from archlab.config import load_config, merge


def noise_config(ws: Path, seed: int = 0, **over: Any) -> Any:
    base = {"workspace": str(ws), "task": {"name": "noise"}, "budget": {"experiments": 3},
            "memory": {"enabled": False}, "search": {"strategy": "random", "seed": seed},
            "sandbox": {"isolation": "none"}, "verify": {"top": 2, "seeds": 3}}
    return load_config(None, env={}, overrides=merge(base, over))


def run_campaign(ws: Path, seed: int = 0, **over: Any) -> Campaign:
    campaign = Campaign.create(noise_config(ws, seed, **over))
    campaign.run()
    return campaign


# -- the statistics --------------------------------------------------------------------------

def test_paired_difference_matches_scipy_and_holm_steps_down():
    a, b = {0: 2.0, 1: 3.1, 2: 2.4, 3: 2.9}, {0: 1.5, 1: 2.9, 2: 1.6, 3: 2.2}
    d = difference(a, b)
    assert d.test == "paired t" and d.p == pytest.approx(stats.ttest_rel(list(a.values()), list(b.values())).pvalue)
    assert d.low < d.diff < d.high and d.diff == pytest.approx(0.55)
    unpaired = difference(a, {0: 1.5, 1: 2.9, 2: 1.6})  # another seed set: Welch, not paired
    assert unpaired.test == "Welch"
    assert unpaired.p == pytest.approx(stats.ttest_ind(list(a.values()), [1.5, 2.9, 1.6], equal_var=False).pvalue)
    assert difference({0: 1.0, 1: 1.0}, {0: 0.5, 1: 0.5}).test == "exact"  # no spread: the difference is exact
    assert difference({0: 1.0}, {0: 0.5}) is None
    # Holm: sorted p times (m - rank), made monotone; the order of the input is kept
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])


# -- the stage --------------------------------------------------------------------------------

def test_verification_trains_top_and_baselines_under_the_same_seeds(tmp_path):
    campaign = run_campaign(tmp_path / "ws", budget={"experiments": 4}, verify={"top": 3, "seeds": 3},
                            task={"effect": 3.0})
    ledger = campaign.ledger
    plan = ledger.get_meta("verify_plan")
    subjects = [s["key"] for s in plan["subjects"]]
    assert [s["role"] for s in plan["subjects"]] == ["candidate"] * 3 + ["baseline"] * 2
    runs = ledger.verify_runs()
    assert sorted((r["subject"], r["seed_index"]) for r in runs) == sorted((s, k) for s in subjects for k in range(3))
    seeds = {k: {r["seed"] for r in runs if r["seed_index"] == k} for k in range(3)}
    assert all(len(v) == 1 for v in seeds.values()), "every subject trains under the same seed k"
    assert len({next(iter(v)) for v in seeds.values()}) == 3
    # the promoted: the best three evaluated campaign experiments, by exploration score
    explored = campaign.ctx.task.ranked(ledger.experiments(status=["done"], origin=["campaign"]))
    assert [s["experiment"] for s in plan["subjects"][:3]] == [e.id for e in explored[:3]]
    findings = verified_findings(ledger, campaign.ctx.task)
    assert findings.done and findings.baseline.role == "baseline" and findings.runs == 15
    for f in findings.rows[:3]:
        assert f.diff.test == "paired t" and f.verdict in ("better", "not distinguishable", "worse")
    assert ledger.spend()["verify_wall_s"] > 0 and ledger.spend()["verify_train_s"] > 0
    events = [e["kind"] for e in ledger.events()]
    assert events.index("verify.done") > events.index("verify.plan")


def test_verification_budget_stops_the_stage_and_resume_finishes_it(tmp_path):
    ws = tmp_path / "ws"
    campaign = run_campaign(ws, task={"delay_s": 0.25}, verify={"top": 2, "seeds": 3, "hours": 0.0002})
    ledger = campaign.ledger
    assert not ledger.get_meta("verify_done")
    assert 0 < len(ledger.verify_runs()) < 12
    assert "verification wall-clock budget reached" in ledger.events(kind="verify.stop")[-1]["data"]["reason"]
    assert ledger.spend()["verify_wall_s"] >= 0.72  # counted apart from the exploration's wall clock
    ledger.close()
    again = Campaign.open(ws, campaign.folder.id, {"verify": {"hours": 1}})
    summary = again.run()
    assert summary.verification == "verified: 12 runs at preset default"
    assert len(again.ledger.verify_runs()) == 12


def test_promotion_skips_behaviour_twins_and_prefers_new_families(tmp_path):
    from types import SimpleNamespace

    from archlab.verification import promote

    rows = [SimpleNamespace(id=i, score=s, fingerprint=fp, proposal={"genome": {"rule": fam}})
            for i, s, fp, fam in [(1, 0.9, "a", "delta"), (2, 0.8, "a", "linear"), (3, 0.7, "b", "delta"),
                                  (4, 0.6, "c", "decay"), (5, 0.5, "d", "linear")]]
    task = SimpleNamespace(ranked=lambda rs, tiebreak=None: sorted(rs, key=lambda e: -e.score),
                           family=lambda g: (g or {}).get("rule"))
    ctx = SimpleNamespace(ledger=SimpleNamespace(experiments=lambda **kw: rows), task=task)
    # #2 behaves as #1 (same fingerprint); #3 is #1's family while others are left
    assert [e.id for e in promote(ctx, 3)] == [1, 4, 5]
    assert [e.id for e in promote(ctx, 4)] == [1, 4, 5, 3]  # then the families already in


def test_successive_halving_keeps_the_best_of_each_rung(tmp_path):
    campaign = run_campaign(tmp_path / "ws", budget={"experiments": 5}, verify={"top": 4, "seeds": 2, "rungs": [2, 1]})
    ledger, task = campaign.ledger, campaign.ctx.task
    runs = ledger.verify_runs()
    per_subject: dict[str, list[int]] = {}
    for r in runs:
        per_subject.setdefault(r["subject"], []).append(r["seed_index"])
    plan = ledger.get_meta("verify_plan")
    candidates = [s["key"] for s in plan["subjects"] if s["role"] == "candidate"]
    kept1, kept2 = ledger.get_meta("verify_rung_1"), ledger.get_meta("verify_rung_2")
    assert len(kept1) == 2 and len(kept2) == 1 and set(kept2) <= set(kept1) <= set(candidates)
    for key in candidates:
        want = 6 if key in kept2 else 4 if key in kept1 else 2
        assert sorted(per_subject[key]) == list(range(want))
    for key in ("b:baseline-1", "b:baseline-2"):
        assert sorted(per_subject[key]) == list(range(6)), "baselines run every rung's seeds"
    rung0 = {k: sum(task.score(r["metrics"]) for r in runs if r["subject"] == k and r["seed_index"] < 2) / 2
             for k in candidates}
    assert set(kept1) == set(sorted(candidates, key=lambda k: -rung0[k])[:2])


def _claims(args: tuple[float, int, str]) -> int:
    effect, count, root = args
    found = 0
    for seed in range(count):
        campaign = run_campaign(Path(root) / f"{effect}-{seed}", seed, task={"effect": effect},
                                budget={"experiments": 2}, search={"baselines": False})
        findings = verified_findings(campaign.ledger, campaign.ctx.task)
        assert findings.done and findings.runs == 12
        found += any(f.verdict == BETTER for f in findings.rows)
        campaign.ledger.close()
    return found


@pytest.mark.slow
def test_null_task_rarely_claims_and_a_planted_effect_is_found(tmp_path):
    """100 campaigns whose every candidate is seed noise: at most 10 % claim "better than" a baseline
    (the family-wise rate is 5 %); 100 with every candidate 8 noise-sd better (what 3 seeds, paired,
    can show under Holm over 2): at least 80 % find it."""
    with ProcessPoolExecutor(2) as pool:  # one campaign at a time in each, as a user would run them
        null, planted = pool.map(_claims, [(0.0, 100, str(tmp_path)), (8.0, 100, str(tmp_path))])
    print(f"null task: {null} of 100 campaigns claimed better; planted effect: found in {planted} of 100")
    assert null <= 10, f"{null} of 100 null campaigns claimed a candidate better than a baseline"
    assert planted >= 80, f"only {planted} of 100 campaigns found the planted effect"


def test_second_run_in_the_workspace_trains_no_baseline_again(tmp_path):
    ws = tmp_path / "ws"
    first = run_campaign(ws)
    second = run_campaign(ws)
    for c in (first, second):
        assert c.ledger.get_meta("verify_done")
    baselines = [e.id for e in second.ledger.experiments(origin=["baseline"])]
    reused = {e["experiment"] for e in second.ledger.events(kind="train.reused_from_cache")}
    assert set(baselines) <= reused, "the second campaign trained a baseline again"
    assert all(second.ledger.get(i).train_s == 0 for i in baselines)
    base_runs = [r for r in second.ledger.verify_runs() if r["subject"].startswith("b:")]
    assert base_runs and all(r["reused"] and r["reused"]["campaign"] == first.folder.id for r in base_runs)
    a = {(r["subject"], r["seed_index"]): r["metrics"] for r in first.ledger.verify_runs()}
    assert all(a[(r["subject"], r["seed_index"])] == r["metrics"] for r in base_runs)
    # what a person reads says so: the counts and the findings name the cache
    assert second.ledger.counts()["cached"] >= len(baselines) and first.ledger.counts()["cached"] == 0
    found = verified_findings(second.ledger, second.ctx.task)
    assert found is not None and found.reused >= len(base_runs)
    # off: every training runs
    third = run_campaign(ws, search={"reuse_results": False})
    assert not third.ledger.events(kind="train.reused_from_cache")
    assert not any(r["reused"] for r in third.ledger.verify_runs())


def test_control_arm_interleaves_uniform_samples_and_is_compared(tmp_path):
    campaign = run_campaign(tmp_path / "ws", budget={"experiments": 8}, verify={"top": 0},
                            search={"strategy": "evolution", "control": 0.5, "population": 2, "tournament": 1})
    rows = campaign.ledger.experiments(origin=["campaign"])
    arms_of = [(r.proposal or {}).get("arm") for r in rows]
    assert arms_of == [None, "control"] * 4
    for r in rows:
        motivation = r.proposal["motivation"]
        assert ("random search" in motivation) == ((r.proposal or {}).get("arm") == "control")
    # evolution's population never holds a control sample
    for ev in campaign.ledger.events(kind="seen.population"):
        shown = {v["id"] for v in ev["data"]["value"]}
        assert not shown & {r.id for r in rows if (r.proposal or {}).get("arm") == "control"}
    a = arms(campaign.ledger, campaign.ctx.task)
    assert len(a.strategy) == 4 and len(a.control) == 4 and a.p is not None
    assert "random control: 4 evaluated" in a.sentence("score")


def test_findings_reach_show_report_chat_and_replay(tmp_path, cli_env):
    from archlab.analysis.chat_tools import Lab, call_tool
    from archlab.analysis.report import build_report
    from archlab.campaign_folder import CampaignFolder
    from archlab.replay import replay

    ws = tmp_path / "ws"
    campaign = run_campaign(ws, task={"effect": 10.0}, search={"control": 0.34}, budget={"experiments": 4},
                            verify={"seeds": 4})
    cid = campaign.folder.id
    findings = verified_findings(campaign.ledger, campaign.ctx.task)
    assert findings.claims, "a 10-sd effect over 4 seeds is verified"
    claim = findings.claims[0]
    assert "beats baseline-" in claim and "over 4 seeds at the `default` preset" in claim and "after Holm" in claim

    shown = subprocess.run([*ARCHLAB, "show", cid, "--workspace", str(ws)], capture_output=True, text=True,
                           env={**cli_env, "COLUMNS": "200"}, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "Verified findings" in shown.stdout and "better than baseline-" in shown.stdout
    assert "strategy arm:" in shown.stdout and "random control:" in shown.stdout
    as_json = json.loads(subprocess.run([*ARCHLAB, "show", cid, "--json", "--workspace", str(ws)],
                                        capture_output=True, text=True, env=cli_env, timeout=120).stdout)
    assert as_json["verified"]["claims"] == findings.claims and as_json["control"]["control"]

    report = build_report(CampaignFolder.open(ws, cid))
    md = report.markdown.read_text()
    assert "## Verified findings" in md and claim in md and "verified.png" in md
    assert (report.markdown.parent / "verified.png").stat().st_size > 0
    assert "Strategy against random control" in md

    answer = call_tool(Lab(ws, cid), "verified_findings", {})
    assert answer["campaigns"][0]["verified"]["claims"] == findings.claims

    replayed = replay(ws, cid)
    assert replayed.ok, replayed.divergence
    assert replayed.verified is True


def test_bad_verification_settings_fail_before_any_folder(tmp_path):
    from archlab.errors import ConfigError

    with pytest.raises(ConfigError, match="rung"):
        noise_config(tmp_path, verify={"top": 2, "rungs": [3]})
    with pytest.raises(ConfigError, match="unknown lm preset 'huge'"):
        Campaign.create(load_config(None, env={}, overrides={"workspace": str(tmp_path / "ws"),
                                                             "verify": {"top": 2, "preset": "huge"}}))
    assert not (tmp_path / "ws").exists()


# -- kill -9 during verification ------------------------------------------------------------------

def _count(ledger: Path, sql: str) -> int:
    if not ledger.exists():
        return 0
    try:
        with sqlite3.connect(ledger, timeout=5) as db:
            return int(db.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill9_during_verification_then_resume(tmp_path, cli_env):
    (tmp_path / "archlab.toml").write_text(
        'workspace = "runs"\n[task]\nname = "noise"\ndelay_s = 0.3\n[budget]\nexperiments = 3\n'
        '[search]\nstrategy = "random"\nparallel = 2\n[memory]\nenabled = false\n[sandbox]\nisolation = "none"\n'
        '[verify]\ntop = 2\nseeds = 4\n')
    ws = tmp_path / "runs"

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([*ARCHLAB, *args, "-q"], cwd=tmp_path, env=cli_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def kill_when(proc: subprocess.Popen, ready) -> None:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.01)
        assert proc.poll() is None, f"the campaign ended before the kill point: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def ledger() -> Path:
        found = list(ws.glob("*/ledger.sqlite"))
        return found[0] if found else ws / "none"

    runs = "SELECT COUNT(*) FROM verify_runs"
    starts = "SELECT COUNT(*) FROM events WHERE kind = 'verify.job.start'"
    # 1: as soon as the plan is stored, 2: with a run in flight after some finished, 3: past half the runs
    points = [lambda: _count(ledger(), "SELECT COUNT(*) FROM events WHERE kind = 'verify.plan'") > 0,
              lambda: _count(ledger(), runs) >= 2 and _count(ledger(), starts) > _count(ledger(), runs),
              lambda: _count(ledger(), runs) >= 10]
    proc = start("run")
    for i, ready in enumerate(points):
        kill_when(proc, ready)
        campaign_id = ledger().parent.name
        if i < len(points) - 1:
            proc = start("resume", campaign_id)
    done = subprocess.run([*ARCHLAB, "resume", campaign_id, "-q"], cwd=tmp_path, env=cli_env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(ledger()) as db:
        per_run = db.execute("SELECT subject, seed_index, COUNT(*) FROM verify_runs GROUP BY subject, seed_index")
        rows = per_run.fetchall()
        ends = db.execute("SELECT data FROM events WHERE kind = 'verify.job.end'").fetchall()
        plan = json.loads(db.execute("SELECT value FROM meta WHERE key = 'verify_plan'").fetchone()[0])
        started = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'verify.job.start'").fetchone()[0]
    subjects = [s["key"] for s in plan["subjects"]]
    assert sorted((s, k) for s, k, _ in rows) == sorted((s, k) for s in subjects for k in range(4))
    assert all(n == 1 for *_, n in rows)
    ended = [(json.loads(d)["subject"], json.loads(d)["seed_index"]) for (d,) in ends]
    assert len(ended) == len(set(ended)) == 16, "a verification run finished twice"
    assert started > 16, "no kill landed on a run in flight (it would have started again)"
    files = sorted(p.name for p in (ws / campaign_id / "verify").glob("*-s*.json"))
    assert len(files) == 16
    assert "Verified findings" in subprocess.run([*ARCHLAB, "show", campaign_id, "--workspace", str(ws)],
                                                 capture_output=True, text=True, env=cli_env).stdout
