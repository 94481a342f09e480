"""The JSON API under /api/: what the pages show, for scripts. Read-only; FastAPI's OpenAPI
page at /api/docs lists it."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from archlab.web import views
from archlab.web.app import NotFound, Site
from archlab.web.security import redact_config

router = APIRouter(tags=["lab"])


def _site(request: Request) -> Site:
    return request.app.state.site


@router.get("/campaigns", summary="Every campaign of the workspace: status, counts, best, spend, budget left")
def campaigns(request: Request) -> Response:
    site = _site(request)
    out = []
    for cid in site.campaign_ids():
        try:
            out.append(site.data(views.summary, site.reader(cid)))
        except NotFound:
            continue
    return site.json({"campaigns": out})


@router.get("/campaigns/{cid}", summary="One campaign: summary, leaderboard, verified findings, gate, failures")
def campaign(request: Request, cid: str) -> Response:
    site = _site(request)
    view = site.reader(cid)
    page = {k: v for k, v in site.data(views.campaign_page, view).items() if k not in ("tree", "tree_html")}
    return site.json({**page, "config": redact_config(view.config)})


@router.get("/campaigns/{cid}/experiments", summary="Every experiment of a campaign, in id order")
def experiments(request: Request, cid: str) -> Response:
    site = _site(request)
    view = site.reader(cid)
    return site.json({"campaign": cid, "metric": view.metric, "experiments": site.data(views.experiments, view)})


@router.get("/campaigns/{cid}/experiments/{eid}", summary="One experiment: proposal, code, diff, gate, events")
def experiment(request: Request, cid: str, eid: str) -> Response:
    site = _site(request)
    view, e = site.experiment(cid, eid)
    return site.json(site.data(views.experiment_page, view, e))


@router.get("/campaigns/{cid}/experiments/{eid}/metrics", summary="An experiment's metrics and curves")
def metrics(request: Request, cid: str, eid: str) -> Response:
    site = _site(request)
    view, e = site.experiment(cid, eid)
    return site.json({"id": e.id, "metrics": e.metrics, "curves": view.curves(e)})


@router.get("/campaigns/{cid}/lineage", summary="The lineage forest: each node with its children")
def lineage(request: Request, cid: str) -> Response:
    site = _site(request)
    return site.json({"campaign": cid, "roots": site.data(views.tree, site.reader(cid))})


@router.get("/campaigns/{cid}/live", summary="What the live page shows now: counts, best, runs in flight")
def live(request: Request, cid: str) -> Response:
    site = _site(request)
    return site.json(live_state(site, cid))


@router.get("/campaigns/{cid}/findings", summary="The verification table and claims (null without one)")
def findings(request: Request, cid: str) -> Response:
    site = _site(request)
    return site.json(site.data(views.findings, site.reader(cid)))




def live_state(site: Site, cid: str) -> dict[str, Any]:
    view = site.reader(cid)
    return views.live(view, site.data(views.live_ledger, view))
