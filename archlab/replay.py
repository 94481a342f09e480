"""archlab replay: run a logged campaign's graph again, with every model answer
taken from its llm.jsonl (matched by experiment, step and attempt; the request
hash must match too) and every sandbox result taken from the record (or
re-executed with --retrain). Each experiment must reproduce the same
proposals, code hashes and decisions; the first divergence stops the replay
with a report of what differed. --fork then continues live from there."""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.campaign_folder import CampaignFolder
from archlab.errors import ArchlabError, LLMError
from archlab.memory.ledger import IN_FLIGHT, Experiment, Ledger
from archlab.sandbox.base import JobResult

ROW_FIELDS = ("status", "name", "parent", "text_hash", "ast_hash", "fingerprint", "score",
              "failure_reason", "duplicate_of")
DECISIONS = ("seen.", "gate.", "check.end", "train.end", "experiment.")


class Divergence(ArchlabError):
    """The replay did not reproduce the record; `where` and `detail` say how."""

    def __init__(self, experiment: int, step: str, detail: str) -> None:
        self.experiment, self.step, self.detail = experiment, step, detail
        super().__init__(f"divergence at experiment #{experiment}, step {step}:\n{detail}")


class RecordedRun:
    """The original campaign as the replay sees it: model answers, what each
    agent was shown, and the sandbox results."""

    def __init__(self, folder: CampaignFolder, retrain: bool = False) -> None:
        self.folder, self.retrain = folder, retrain
        self.ledger = Ledger(folder.ledger)
        self.calls: dict[tuple[Any, str, int], dict[str, Any]] = {}
        if folder.llm_log.exists():
            for line in folder.llm_log.read_text().splitlines():
                rec = json.loads(line)
                self.calls[(rec["experiment"], rec["step"], rec["attempt"])] = rec  # a re-run after a kill: last wins
        self._seen: dict[tuple[int, str, int], Any] = {}
        for ev in self.ledger.events():
            if ev["kind"].startswith("seen.") and ev["data"]:
                self._seen[(ev["experiment"], ev["kind"][5:], ev["data"]["attempt"])] = ev["data"]["value"]

    # -- what agents were shown; sandbox results ---------------------------------
    def seen(self, experiment: int, kind: str, attempt: int) -> Any:
        return self._seen.get((experiment, kind, attempt))

    def job(self, experiment: int, name: str) -> JobResult | None:
        if self.retrain:
            return None
        path = self.folder.root / "experiments" / str(experiment) / name
        if not path.exists():
            raise Divergence(experiment, name.removesuffix(".json"), f"the original run has no result {path.name}: "
                             "it never ran this job, so the replay took a different path")
        return JobResult.load(path)

    def verify_job(self, name: str) -> JobResult | None:
        """A verification run's recorded result (verify/<name>.json)."""
        if self.retrain:
            return None
        path = self.folder.root / "verify" / f"{name}.json"
        if not path.exists():
            raise Divergence(0, f"verify {name}", "the original verification has no such run: the replay "
                             "promoted other candidates or seeds")
        from archlab.verification import load_run

        return load_run(path)[0]

    # -- the model, answered from llm.jsonl (the LLM client's script protocol) ----
    def check_request(self, record: dict[str, Any]) -> None:
        key = (record["experiment"], record["step"], record["attempt"])
        original = self.calls.get(key)
        where = f"{record['step']} attempt {record['attempt']}"
        if original is None:
            raise Divergence(record["experiment"], where, "the original run made no such model call")
        if original["request_hash"] != record["request_hash"]:
            raise Divergence(record["experiment"], where, "the request differs from the recorded one "
                             f"(hash {original['request_hash'][:12]} -> {record['request_hash'][:12]}):\n"
                             + _message_diff(original["request"]["messages"], record["request"]["messages"]))
        if original["response"] is None:  # the original call failed: fail the same way
            raise LLMError(original["error"] or "recorded model call failed")

    def rule(self, step: str, experiment: int | None, attempt: int) -> Any:
        """The recorded answer as a scripted rule: text, finish reason, reasoning, tool calls, usage."""
        from archlab.llm.scripted import Rule

        rec = self.calls[(experiment, step, attempt)]
        calls = [{"id": c.get("id"), "name": c["name"], "arguments": c.get("arguments")}
                 for c in rec.get("tool_calls") or []] or None
        return Rule(step=step, experiment=experiment, attempt=attempt, response=rec["response"], error=None,
                    finish_reason=rec.get("finish_reason") or "stop", reasoning=rec.get("reasoning"),
                    tool_calls=calls, usage={"prompt_tokens": rec.get("prompt_tokens", 0),
                                             "completion_tokens": rec.get("completion_tokens", 0)})


def _message_diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    def lines(msgs: list[dict[str, Any]]) -> list[str]:
        return [f"[{m.get('role')}] {line}" for m in msgs for line in str(m.get("content", "")).splitlines()]
    diff = list(difflib.unified_diff(lines(before), lines(after), "recorded", "replayed", lineterm="", n=1))
    return "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else "")


def decisions(ledger: Ledger, experiment: int) -> list[tuple[str, str]]:
    """The decisions an experiment's run made, in order, without the repeats a kill
    and resume leave behind (a step run again records its events again)."""
    out: list[tuple[str, str]] = []
    for ev in ledger.events(experiment):
        kind, data = ev["kind"], ev["data"] or {}
        if not kind.startswith(DECISIONS):
            continue
        if kind.startswith("seen."):
            detail = json.dumps(data.get("value"), sort_keys=True)
            out = [d for d in out if d[0] != f"{kind}:{data.get('attempt')}"]  # re-run: last wins
            kind = f"{kind}:{data.get('attempt')}"
        elif kind.endswith(".end"):
            detail = str(data.get("status"))
        elif kind == "gate.pass":
            detail = f"new code, ast hash {data.get('ast_hash')}"
        elif kind.startswith("gate."):
            detail = f"{data.get('layer')} #{data.get('neighbour')}"
        else:
            detail = str(data.get("score", data.get("reason")))
        if not out or out[-1] != (kind, detail):
            out.append((kind, detail))
    return out


def compare(original: Ledger, replayed: Ledger, experiment: int) -> None:
    """Raise Divergence at the first decision or recorded field that differs."""
    before, after = decisions(original, experiment), decisions(replayed, experiment)
    for i, (a, b) in enumerate(zip(before, after, strict=False)):
        if a != b:
            raise Divergence(experiment, f"{i + 1} ({a[0]})", f"recorded {a[0]} = {a[1]}\nreplayed {b[0]} = {b[1]}")
    if len(before) != len(after):
        longer = before if len(before) > len(after) else after
        extra = longer[min(len(before), len(after))]
        raise Divergence(experiment, f"{min(len(before), len(after)) + 1} ({extra[0]})",
                         f"the {'recorded' if longer is before else 'replayed'} run went on with "
                         f"{extra[0]} = {extra[1]}")
    row_a, row_b = original.get(experiment), replayed.get(experiment)
    for name in ROW_FIELDS:
        if getattr(row_a, name) != getattr(row_b, name):
            raise Divergence(experiment, f"record ({name})",
                             f"recorded {name} = {getattr(row_a, name)!r}\nreplayed {name} = {getattr(row_b, name)!r}")
    genome_a, genome_b = (row_a.proposal or {}).get("genome"), (row_b.proposal or {}).get("genome")
    if genome_a != genome_b:
        raise Divergence(experiment, "record (genome)", f"recorded {genome_a}\nreplayed {genome_b}")


def compare_verification(original: Ledger, replayed: Ledger) -> None:
    """The same plan (subjects, seeds, preset) and, run by run, the same outcomes."""
    plan_a, plan_b = original.get_meta("verify_plan"), replayed.get_meta("verify_plan")
    for part in ("preset", "seeds", "rungs"):
        if plan_a.get(part) != plan_b.get(part):
            raise Divergence(0, f"verification plan ({part})",
                             f"recorded {plan_a.get(part)}\nreplayed {plan_b.get(part)}")
    keys_a, keys_b = ([s["key"] for s in p["subjects"]] for p in (plan_a, plan_b))
    if keys_a != keys_b:
        raise Divergence(0, "verification plan (promoted)", f"recorded {keys_a}\nreplayed {keys_b}")
    runs_a = {(r["subject"], r["seed_index"]): (r["status"], r["metrics"]) for r in original.verify_runs()}
    runs_b = {(r["subject"], r["seed_index"]): (r["status"], r["metrics"]) for r in replayed.verify_runs()}
    for key in sorted(set(runs_a) | set(runs_b)):
        if runs_a.get(key) != runs_b.get(key):
            raise Divergence(0, f"verification run {key[0]} seed {key[1]}",
                             f"recorded {runs_a.get(key)}\nreplayed {runs_b.get(key)}")


@dataclass
class ReplayReport:
    original: str
    replay: str
    experiments: list[int] = field(default_factory=list)  # reproduced, in order
    divergence: Divergence | None = None
    unfinished: int | None = None  # the original stopped before this experiment finished
    forked: Any = None             # the live campaign's summary, with --fork
    verified: bool | None = None   # the verification stage was replayed too (None: the original had none)

    @property
    def ok(self) -> bool:
        return self.divergence is None


def replay(workspace: Path, campaign_id: str, *, to: int | None = None, retrain: bool = False,
           fork: bool = False, overrides: dict[str, Any] | None = None,
           on_experiment: Callable[[int], None] | None = None) -> ReplayReport:
    from archlab.campaign import Campaign
    from archlab.config import Config, merge, validate

    original = CampaignFolder.open(workspace, campaign_id)
    data = original.read_config()
    config = Config.model_validate(data)
    live = validate(merge(data, overrides or {}), "the fork's flags") if fork else None  # fail before replaying
    folder = CampaignFolder.create(workspace, f"{original.id}-{'fork' if fork else 'replay'}")
    (folder.root / "replay.json").write_text(json.dumps({"replay_of": original.id, "to": to, "retrain": retrain}))
    folder.write_config(data)
    recorded = RecordedRun(original, retrain)
    campaign = Campaign(folder, config, recorded=recorded)  # answers from llm.jsonl, through litellm's mock path
    if retrain:
        campaign.ctx.task.prepare(folder.root)
    report = ReplayReport(original.id, folder.id)
    baseline_ids = recorded.ledger.get_meta("baselines_allocated")
    for row in recorded.ledger.experiments():
        if to is not None and row.id > to:
            break
        if row.status in IN_FLIGHT:
            report.unfinished = row.id
            break
        if _allocate_like(campaign.ledger, row) != row.id:
            raise ArchlabError(f"replay allocated a different id than #{row.id}; is {folder.root} fresh?")
        try:
            try:
                campaign.run_experiment(row.id)
            except Divergence:
                raise
            except Exception as exc:  # a step that crashed in the original too is recorded the same way
                campaign.record_crash(row.id, exc)
            compare(recorded.ledger, campaign.ledger, row.id)
        except Divergence as div:
            report.divergence = div
            break
        report.experiments.append(row.id)
        if on_experiment:
            on_experiment(row.id)
    if baseline_ids is not None:
        campaign.ledger.set_meta("baselines_allocated", baseline_ids)
    if report.ok and report.unfinished is None and to is None and recorded.ledger.get_meta("verify_done"):
        try:
            campaign.verification().run()
            compare_verification(recorded.ledger, campaign.ledger)
        except Divergence as div:
            report.divergence = div
        report.verified = report.divergence is None
    if fork and report.ok:
        folder.write_config(live.model_dump(mode="json"))
        forked = Campaign(folder, live)  # a fresh lab: live model and sandbox, no record
        report.forked = forked.run()
    return report


def _allocate_like(ledger: Ledger, row: Experiment) -> int:
    proposal = row.proposal or {}
    given = {k: proposal[k] for k in ("name", "motivation", "design", "code", "genome") if k in proposal} \
        if "code" in proposal else None
    if given is None and proposal.get("arm") == "control":  # the random-control arm, as it was allocated
        return ledger.allocate(row.origin, {"arm": "control"})
    return ledger.allocate(row.origin, given, name=row.name if given else None)


def timeline(folder: CampaignFolder) -> list[str]:
    """The logged run as a story, step by step, from the ledger and llm.jsonl."""
    ledger = Ledger(folder.ledger)
    calls: dict[int | None, list[dict[str, Any]]] = {}
    if folder.llm_log.exists():
        for line in folder.llm_log.read_text().splitlines():
            rec = json.loads(line)
            calls.setdefault(rec["experiment"], []).append(rec)
    lines: list[str] = []
    for row in ledger.experiments():
        score = f" {row.score:.4g}" if row.score is not None else ""
        lines.append(f"#{row.id} [{row.origin}] {row.name or '(unnamed)'}: {row.status}{score}")
        llm = iter(calls.get(row.id, []))
        for ev in ledger.events(row.id):
            story = _story(ev["kind"], ev["data"] or {})
            if story:
                lines.append(f"    {story}")
        for rec in llm:
            verdict = ("ok" if rec["valid"] else
                       f"{'failed' if rec.get('response') is None else 'invalid'}: {(rec['error'] or '')[:100]}")
            lines.append(f"    model {rec['step']} attempt {rec['attempt']}: {verdict}, "
                         f"{rec['prompt_tokens'] + rec['completion_tokens']} tokens")
        if row.failure_reason:
            lines.append(f"    reason: {row.failure_reason}")
        if row.analysis:
            lines.append(f"    analysis: {row.analysis.splitlines()[0][:160]}")
    return lines


def _story(kind: str, data: dict[str, Any]) -> str | None:
    if kind == "seen.research" or kind == "seen.population":
        value = data.get("value") or []
        if isinstance(value, dict):  # a memory view: the ids of each section
            shown = {name: len(ids) for name, ids in (value.get("sections") or {}).items() if ids}
            return "researcher shown " + (", ".join(f"{n} {name}" for name, n in shown.items()) or "nothing")
        refs = [v.get("id") if isinstance(v, dict) else v for v in value]
        return f"researcher shown {len(refs)} past experiments {refs}"
    if kind == "seen.model":  # an ensemble's pick
        value = data.get("value") or {}
        return f"given to model {value.get('model')} (to beat: {value.get('incumbent')})"
    if kind == "gate.pass":
        return f"gate: new code (ast {str(data.get('ast_hash'))[:10]})"
    if kind.startswith("gate."):
        return f"gate: {kind[5:]} — {data.get('reason')}"
    if kind.endswith(".end"):
        reason = f" ({data.get('reason')[:100]})" if data.get("reason") else ""
        return f"{kind[:-4]}: {data.get('status')}{reason} in {data.get('wall_s', 0):.2f} s"
    if kind == "campaign.paused":
        return f"campaign paused ({data.get('kind')}): {str(data.get('reason'))[:200]}"
    if kind.endswith(".reused_after_restart"):
        return f"{kind.split('.')[0]}: result kept across a restart"
    return None
