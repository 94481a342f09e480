"""The FastAPI application of `archlab serve`: the lab's state (workspace, readers, charts),
the guard every request passes (token, host, security headers) and the routers of
archlab/web/pages.py (HTML) and archlab/web/api.py (JSON under /api/)."""
from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from archlab.analysis.campaign_reader import CampaignReader
from archlab.campaign_folder import CampaignFolder
from archlab.memory.ledger import IN_FLIGHT
from archlab.web import security
from archlab.web.charts import Charts

STATIC = Path(__file__).parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")


MEMO_SIZE = 512
T = TypeVar("T")


class NotFound(Exception):
    """An id that names nothing of this workspace (or tries to leave it): 404, whatever the route."""


@dataclass
class Site:
    workspace: Path
    cfg: Any                    # the settings `archlab serve` was started with ([llm], [memory], ...)
    token_hash: str | None      # sha256 of the token, when one is required
    allowed_hosts: tuple[str, ...] | None  # Host headers accepted (loopback binds: DNS rebinding)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    charts: Charts = field(default_factory=Charts)
    cache: bool = True          # off: every request computes its page afresh (what a benchmark of rendering wants)
    _readers: dict[str, CampaignReader] = field(default_factory=dict)
    _versions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _memo: OrderedDict[tuple[Any, ...], Any] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.scrub = security.Scrubber(self.workspace)
        self.templates = Environment(loader=PackageLoader("archlab.web", "templates"),
                                     autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                                     lstrip_blocks=True)

    def campaign_ids(self) -> list[str]:
        from archlab.campaign_folder import list_campaigns

        return [f.id for f in list_campaigns(self.workspace)]

    def reader(self, campaign_id: str) -> CampaignReader:
        """The campaign by its folder name under the workspace, read afresh; NotFound for
        anything else (a path, `..`, a name the workspace does not hold)."""
        if not security.SAFE_ID.match(campaign_id or "") or ".." in campaign_id:
            raise NotFound(campaign_id)
        root = self.workspace / campaign_id
        if not (root / "config.json").is_file() or root.resolve().parent != self.workspace.resolve():
            raise NotFound(campaign_id)
        with self._lock:
            view = self._readers.get(campaign_id)
            if view is None:
                view = self._readers[campaign_id] = CampaignReader.open(CampaignFolder(root))
        version = self.version(view)
        if self._versions.get(campaign_id) != version:  # the campaign moved on (or this is the first look)
            view.refresh()
            self._versions[campaign_id] = version
        return view

    @staticmethod
    def version(view: CampaignReader) -> tuple[int, ...]:
        """Changes whenever what a page shows may have: a commit to the ledger by another process
        (SQLite's data_version), the model log growing, the config rewritten."""
        stamp: tuple[int, ...] = (view.ledger.data_version(), int(view.folder.running_pid() is not None))
        for path in (view.folder.llm_log, view.folder.config):
            try:
                st = path.stat()
                stamp += (st.st_size, st.st_mtime_ns)
            except OSError:
                stamp += (-1, -1)
        return stamp

    def memo(self, name: str, view: CampaignReader, compute: Callable[[], T], *extra: Any) -> T:
        """compute(), kept until the campaign's version moves: a page of a finished campaign is
        computed once, a live one once per change, however many people (or scripts) look."""
        if not self.cache:
            return compute()
        key = (name, view.id, extra, self._versions.get(view.id))
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return value

    def experiment(self, campaign_id: str, exp_id: str) -> tuple[CampaignReader, Any]:
        view = self.reader(campaign_id)
        if not exp_id.isdigit() or len(exp_id) > 9:
            raise NotFound(exp_id)
        e = view.get(int(exp_id))
        if e is None:
            raise NotFound(exp_id)
        return view, e

    def data(self, compute: Callable[..., T], view: CampaignReader, *args: Any) -> T:
        """compute(view, *args) from archlab/web/views.py, memoised by the campaign's version
        (args are experiments: keyed by id). An experiment in flight is computed afresh: its
        progress is in its job's log, which moves without the ledger."""
        if any(getattr(a, "status", None) in IN_FLIGHT for a in args):
            return compute(view, *args)
        return self.memo(compute.__name__, view, lambda: compute(view, *args), *(getattr(a, "id", a) for a in args))

    def page(self, name: str, request: Request, **context: Any) -> Response:
        html = self.templates.get_template(name).render(csrf=self.csrf, path=request.url.path, **context)
        return Response(self.scrub(html), media_type="text/html; charset=utf-8")

    def json(self, data: Any, status_code: int = 200) -> Response:
        text = json.dumps(data, default=str, ensure_ascii=False)
        return Response(self.scrub(text), status_code=status_code, media_type="application/json")


def create_app(workspace: Path, cfg: Any, *, token_hash: str | None = None,
               allowed_hosts: tuple[str, ...] | None = None, cache: bool = True) -> FastAPI:
    from archlab.web.api import router as api_router
    from archlab.web.pages import router as pages_router

    app = FastAPI(title="archlab", description="The lab's campaigns, experiments, metrics and lineage, read-only. "
                  "Send the token as `Authorization: Bearer TOKEN` when the server asks for one.",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.site = Site(Path(workspace), cfg, token_hash, allowed_hosts, cache=cache)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _mount_docs(app)
    app.include_router(pages_router)
    app.include_router(api_router, prefix="/api")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return app.state.site.json({"error": "not found"}, 404)
        return PlainTextResponse("404: no such campaign, experiment or file in this workspace", 404)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        site: Site = app.state.site
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if site.allowed_hosts is not None and host not in site.allowed_hosts:
            return PlainTextResponse("403: this server answers to localhost only", 403)
        set_cookie = None
        if site.token_hash is not None:
            auth = request.headers.get("authorization", "")
            presented = auth[7:] if auth.lower().startswith("bearer ") else request.cookies.get(security.TOKEN_COOKIE)
            query = parse_qs(request.url.query).get("token", [None])[0]
            if not security.token_matches(presented, site.token_hash):
                if not security.token_matches(query, site.token_hash):
                    return PlainTextResponse("401: this server needs its token (printed when it started): "
                                             "open it once with ?token=TOKEN, or send Authorization: Bearer TOKEN",
                                             401, headers={"WWW-Authenticate": "Bearer"})
                set_cookie = query
        if set_cookie is not None and request.method == "GET":  # a link with ?token=: keep it in a cookie
            response: Response = RedirectResponse(request.url.remove_query_params("token"), 303)
        else:
            response = await call_next(request)
        if set_cookie is not None:
            response.set_cookie(security.TOKEN_COOKIE, set_cookie, httponly=True, samesite="strict")
        docs = request.url.path == "/api/docs"
        response.headers["Content-Security-Policy"] = DOCS_CSP if docs else PAGE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def _mount_docs(app: FastAPI) -> None:
    """FastAPI's OpenAPI page with its swagger-ui files from a package: nothing from a CDN."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the page then lists nothing; the JSON spec is still served
        return
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/api/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/api/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="archlab API",
                                   swagger_js_url="/api/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/api/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/api/docs-assets/favicon-32x32.png")
