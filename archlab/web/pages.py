"""The HTML pages: the campaign list, a campaign, an experiment, memory search, the chat
and the replay story; the live stream a campaign page listens to; the figures."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from archlab.web import views
from archlab.web.api import live_state
from archlab.web.app import NotFound, Site
from archlab.web.code import code_css, highlight

router = APIRouter(include_in_schema=False)
LIVE_POLL_S = 0.5


def _site(request: Request) -> Site:
    return request.app.state.site


@router.get("/")
def campaigns(request: Request) -> Response:
    site = _site(request)
    rows = []
    for cid in reversed(site.campaign_ids()):
        try:
            rows.append(site.data(views.summary, site.reader(cid)))
        except NotFound:
            continue
    return site.page("campaigns.html", request, campaigns=rows, title="campaigns")


@router.get("/c/{cid}")
def campaign(request: Request, cid: str) -> Response:
    site = _site(request)
    view = site.reader(cid)
    return site.page("campaign.html", request, c=site.data(views.campaign_page, view), title=cid)


@router.get("/c/{cid}/board")
def board(request: Request, cid: str) -> Response:
    """The leaderboard and counters alone: what the live page swaps in when the ledger moves."""
    site = _site(request)
    view = site.reader(cid)
    return site.page("board.html", request, c={"summary": site.data(views.summary, view),
                                              "board": site.data(views.leaderboard, view),
                                              "report_metric": view.task.report_metric})


@router.get("/c/{cid}/e/{eid}")
def experiment(request: Request, cid: str, eid: str) -> Response:
    site = _site(request)
    view, e = site.experiment(cid, eid)
    data = site.data(views.experiment_page, view, e)
    return site.page("experiment.html", request, c=site.data(views.summary, view), x=data, title=f"{cid} #{e.id}",
                     code_html=highlight(data["code"], "python"),
                     diff_html=highlight(data["diff"], "diff") if data["diff"] else None)


@router.get("/c/{cid}/plot/{kind}.svg")
def plot(request: Request, cid: str, kind: str) -> Response:
    site = _site(request)
    view = site.reader(cid)
    if kind not in ("best_experiments", "best_compute", "distribution", "lineage", "verified"):
        raise NotFound(kind)
    return _svg(site, site.charts.get(view, kind))


@router.get("/c/{cid}/e/{eid}/curves.svg")
def curves(request: Request, cid: str, eid: str) -> Response:
    site = _site(request)
    view, e = site.experiment(cid, eid)
    return _svg(site, site.charts.get(view, "curves", e.id))


def _svg(site: Site, svg: bytes | None) -> Response:
    if svg is None:
        return PlainTextResponse("nothing to draw yet", 404)
    return Response(site.scrub(svg.decode()), media_type="image/svg+xml")


@router.get("/static-code.css")
def code_style() -> Response:
    return Response(code_css(), media_type="text/css")


@router.get("/c/{cid}/live")
async def live(request: Request, cid: str) -> StreamingResponse:
    """Server-sent events: the campaign's state whenever its ledger moves (and every 15 s)."""
    site = _site(request)
    site.reader(cid)  # 404 before the stream opens

    async def stream() -> AsyncIterator[str]:
        last, quiet = None, 0.0
        while not await request.is_disconnected():
            state = await asyncio.to_thread(lambda: live_state(site, cid))
            key = json.dumps(state, sort_keys=True, default=str)
            if key != last or quiet >= 15:
                last, quiet = key, 0.0
                yield f"data: {site.scrub(key)}\n\n"
            await asyncio.sleep(LIVE_POLL_S)
            quiet += LIVE_POLL_S

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/c/{cid}/replay")
def replay(request: Request, cid: str) -> Response:
    from archlab.replay import timeline

    site = _site(request)
    view = site.reader(cid)
    steps: list[dict[str, Any]] = []
    for line in timeline(view.folder):
        if not line.startswith(" ") or not steps:
            steps.append({"head": line, "lines": []})
        else:
            steps[-1]["lines"].append(line.strip())
    return site.page("replay.html", request, c=site.data(views.summary, view), steps=steps, title=f"{cid}: replay")


@router.get("/memory")
def memory(request: Request, q: str = "", campaign: str | None = None) -> Response:
    site = _site(request)
    found = None
    if q.strip():
        from archlab.analysis.chat import workspace_memory
        from archlab.analysis.chat_tools import Lab, call_tool

        if campaign is not None:
            site.reader(campaign)  # 404 for a name the workspace does not hold
        lab = Lab(site.workspace, campaign, memory=workspace_memory(site.cfg))
        try:
            found = call_tool(lab, "search_memory", {"query": q[:500], "limit": 20})
        finally:
            if lab.memory is not None:
                lab.memory.close()
    return site.page("memory.html", request, q=q, found=found, campaigns=site.campaign_ids(), title="memory")


@router.get("/c/{cid}/chat")
def chat_page(request: Request, cid: str, session: str = "default") -> Response:
    site = _site(request)
    view = site.reader(cid)
    lab, analyst = _analyst(site, cid, session)
    try:
        history = [m for m in analyst.history() if m.get("role") in ("user", "assistant", "tool")]
        mode = "llm" if analyst.model is not None else "retrieval"
    finally:
        analyst.close()
        if lab.memory is not None:
            lab.memory.close()
    return site.page("chat.html", request, c=site.data(views.summary, view), history=history, mode=mode,
                     session=session, budget=views.chat_budget(view), title=f"{cid}: chat")


@router.post("/c/{cid}/chat")
async def ask(request: Request, cid: str) -> Response:
    """One question; the answer streams back as server-sent events (each tool call, each
    result, the answer). Spends tokens: CSRF-checked, and refused once the campaign's LLM
    budget is spent."""
    site = _site(request)
    view = site.reader(cid)
    if request.headers.get("x-csrf-token") != site.csrf:
        return PlainTextResponse("403: missing or wrong CSRF token (reload the page)", 403)
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        return PlainTextResponse("403: a request from another site", 403)
    try:
        body = await request.json()
    except ValueError:
        return PlainTextResponse("400: send JSON {\"question\": \"...\"}", 400)
    question = str((body or {}).get("question") or "").strip()[:4000]
    session = str((body or {}).get("session") or "default")[:64]
    if not question:
        return PlainTextResponse("400: an empty question", 400)
    over = views.chat_budget(view)
    if over is not None:
        return PlainTextResponse(f"402: {over}; raise [budget] tokens/usd to chat on", 402)
    return StreamingResponse(_turn(site, cid, session, question), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _analyst(site: Site, cid: str, session: str) -> tuple[Any, Any]:
    from archlab.analysis.chat import open_analyst

    cfg = site.cfg.model_copy(update={"workspace": site.workspace})
    return open_analyst(cfg, cid, session)


def _turn(site: Site, cid: str, session: str, question: str) -> Iterator[str]:
    from archlab.errors import ArchlabError

    lab, analyst = _analyst(site, cid, session)
    try:
        yield _event({"type": "mode", "mode": "llm" if analyst.model is not None else "retrieval"}, site)
        for event in analyst.ask_stream(question):
            if event["type"] == "answer":
                event = {"type": "answer", "text": event["answer"].text, "mode": event["answer"].mode}
            yield _event(event, site)
    except ArchlabError as exc:
        yield _event({"type": "error", "error": f"{exc} (the question was not answered; ask again once the "
                                                 "model is back)"}, site)
    finally:
        analyst.close()
        if lab.memory is not None:
            lab.memory.close()
    yield _event({"type": "done"}, site)


def _event(data: dict[str, Any], site: Site) -> str:
    return f"data: {site.scrub(json.dumps(data, default=str, ensure_ascii=False))}\n\n"
