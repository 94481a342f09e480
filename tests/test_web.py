"""`archlab serve`: the page in a real browser (Debian's Chromium driven by Playwright) over a
real lm campaign (curves, diffs, lineage) with the scripted analyst, a running campaign's
page updating without a reload; and the safety of every route (token, traversal, secrets)."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ARCHLAB

SECRET = "sk-archlab-test-0123456789abcdefSECRET"
LM = {"name": "lm", "d_model": 32, "n_heads": 2, "n_layers": 1, "seq_len": 48, "probe_len": 24, "batch_size": 4,
      "steps": 30, "evals": 2, "log_every": 5}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)"
    return None


def _need_browser() -> None:
    why = _browser_missing()
    if why is not None:
        if os.environ.get("BROWSER_REQUIRED"):
            pytest.fail(f"BROWSER_REQUIRED is set but {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lm_workspace(tmp_path_factory) -> tuple[Path, str]:
    """A real lm campaign (4 baselines + 4 evolved candidates, tiny model, 30 steps), with the
    provider key the server's environment holds planted where a careless page would show it:
    the campaign's config, a motivation, the model log."""
    from archlab.campaign import Campaign
    from archlab.config import load_config

    ws = tmp_path_factory.mktemp("web") / "runs"
    cfg = load_config(None, env={}, overrides={
        "workspace": str(ws), "task": LM, "budget": {"experiments": 4}, "memory": {"enabled": False},
        "search": {"strategy": "evolution", "population": 2, "tournament": 2, "parallel": 2}})
    campaign = Campaign.create(cfg)
    campaign.run()
    cid = campaign.folder.id
    campaign.ledger.close()
    folder = ws / cid
    conf = json.loads((folder / "config.json").read_text())
    conf["llm"] = {**(conf.get("llm") or {}), "api_key": SECRET}  # as if a key had been written into the toml
    (folder / "config.json").write_text(json.dumps(conf))
    import sqlite3

    db = sqlite3.connect(folder / "ledger.sqlite")
    row = db.execute("SELECT id, proposal FROM experiments WHERE origin = 'campaign' ORDER BY id LIMIT 1").fetchone()
    proposal = json.loads(row[1])
    proposal["motivation"] = f"{proposal.get('motivation', '')} (key {SECRET} in {folder})"
    db.execute("UPDATE experiments SET proposal = ? WHERE id = ?", (json.dumps(proposal), row[0]))
    db.commit()
    db.close()
    with open(folder / "llm.jsonl", "a") as log:
        log.write(json.dumps({"step": "research", "experiment": row[0], "attempt": 1, "valid": True,
                              "request": {"messages": [{"role": "user", "content": f"api_key={SECRET}"}]},
                              "response": "ok", "prompt_tokens": 3, "completion_tokens": 1}) + "\n")
    return ws, cid


def _client(ws: Path, **kw):
    from fastapi.testclient import TestClient

    from archlab.config import load_config
    from archlab.web.app import create_app

    cfg = load_config(None, env={}, overrides={"workspace": str(ws), "memory": {"enabled": False}})
    return TestClient(create_app(ws, cfg, **kw), base_url="http://127.0.0.1")


def _every_url(ws: Path, cid: str) -> list[str]:
    from archlab.memory.ledger import Ledger

    ids = [e.id for e in Ledger(ws / cid / "ledger.sqlite").experiments()]
    urls = ["/", "/memory", "/memory?q=gated+delta", "/api/campaigns", "/api/docs", "/api/openapi.json",
            "/static/app.js", "/static/style.css", "/static-code.css", f"/c/{cid}", f"/c/{cid}/board",
            f"/c/{cid}/replay", f"/c/{cid}/chat", f"/api/campaigns/{cid}", f"/api/campaigns/{cid}/experiments",
            f"/api/campaigns/{cid}/lineage", f"/api/campaigns/{cid}/live", f"/api/campaigns/{cid}/findings",
            *[f"/c/{cid}/plot/{k}.svg" for k in ("best_experiments", "best_compute", "distribution", "lineage")]]
    for i in ids:
        urls += [f"/c/{cid}/e/{i}", f"/c/{cid}/e/{i}/curves.svg", f"/api/campaigns/{cid}/experiments/{i}",
                 f"/api/campaigns/{cid}/experiments/{i}/metrics"]
    return urls


def test_no_page_or_response_shows_a_secret_or_a_host_path(lm_workspace, monkeypatch):
    ws, cid = lm_workspace
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    client = _client(ws)
    seen = 0
    for url in _every_url(ws, cid):
        r = client.get(url)
        assert r.status_code in (200, 404), (url, r.status_code, r.text[:300])
        body = r.text
        seen += r.status_code == 200
        assert SECRET not in body, f"{url} shows the API key"
        assert str(ws) not in body and str(ws.resolve()) not in body, f"{url} shows a host path"
        assert os.environ["PATH"] not in body, f"{url} shows the environment"
    assert seen > 30
    page = client.get(f"/c/{cid}/e/{_first_campaign_id(ws, cid)}").text
    assert "[redacted]" in page  # the planted key was there, and was removed
    assert "research attempt 1" in page and "api_key=[redacted]" in page  # its LLM call, prompt folded in


def _first_campaign_id(ws: Path, cid: str) -> int:
    from archlab.memory.ledger import Ledger

    return next(e.id for e in Ledger(ws / cid / "ledger.sqlite").experiments(origin=["campaign"]))


def test_traversal_in_any_id_or_file_is_404(lm_workspace):
    ws, cid = lm_workspace
    client = _client(ws)
    (ws.parent / "outside.txt").write_text("private")
    for url in ["/c/..%2Foutside.txt", "/c/%2E%2E", f"/c/{cid}%2F..%2F..", f"/c/{cid}/e/..%2F1",
                f"/c/{cid}/e/1%2F..%2F..%2Fconfig.json", "/api/campaigns/..%2F..%2Fetc%2Fpasswd",
                f"/api/campaigns/{cid}/experiments/-1", f"/c/{cid}/e/99999", f"/c/{cid}/plot/..%2Fconfig.svg",
                "/static/..%2F..%2Fapp.py", "/static/%2E%2E/app.py", "/c/%2Fetc%2Fpasswd", "/memory?q=x&campaign=..",
                f"/c/{ws}", f"/api/campaigns/{cid}/experiments/1e3"]:
        r = client.get(url)
        assert r.status_code == 404, (url, r.status_code, r.text[:200])
        assert "private" not in r.text and "root:" not in r.text


def test_off_loopback_every_route_needs_the_token(lm_workspace):
    from archlab.web.security import digest

    ws, cid = lm_workspace
    token = "t0ken-for-the-test-0123456789"
    client = _client(ws, token_hash=digest(token))
    routes = [*_every_url(ws, cid), "/no/such/page", "/api/nothing"]
    for url in routes:
        assert client.get(url).status_code == 401, url
    assert client.post(f"/c/{cid}/chat", json={"question": "hi"}).status_code == 401
    assert client.get(f"/c/{cid}", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert client.get(f"/c/{cid}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # a link with ?token= sets a cookie and drops the token from the address
    fresh = _client(ws, token_hash=digest(token))
    r = fresh.get(f"/c/{cid}?token={token}", follow_redirects=False)
    assert r.status_code == 303 and "token" not in r.headers["location"]
    assert fresh.get(f"/c/{cid}").status_code == 200  # the cookie carries it now


def test_chat_is_a_csrf_checked_post_within_the_budget(lm_workspace, tmp_path):
    ws, cid = lm_workspace
    copy = tmp_path / "runs"
    shutil.copytree(ws, copy)
    client = _client(copy)
    page = client.get(f"/c/{cid}/chat").text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert client.post(f"/c/{cid}/chat", json={"question": "which is best?"}).status_code == 403
    r = client.post(f"/c/{cid}/chat", json={"question": "which is best?"},
                    headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post(f"/c/{cid}/chat", json={"question": "which is best?"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[0] == {"type": "mode", "mode": "retrieval"} and events[-1]["type"] == "done"
    assert any(e["type"] == "tool_call" and e["name"] == "leaderboard" for e in events)
    assert "retrieval mode" in next(e for e in events if e["type"] == "answer")["text"]
    # a campaign whose LLM budget is spent takes no more questions
    conf = json.loads((copy / cid / "config.json").read_text())
    conf["budget"] = {**(conf.get("budget") or {}), "tokens": 2}
    (copy / cid / "config.json").write_text(json.dumps(conf))
    client = _client(copy)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get(f"/c/{cid}/chat").text).group(1)
    r = client.post(f"/c/{cid}/chat", json={"question": "which is best?"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 402 and "budget of 2 tokens is spent" in r.text


def test_loopback_server_refuses_other_host_names(lm_workspace):
    from archlab.web.security import LOOPBACK

    ws, cid = lm_workspace
    client = _client(ws, allowed_hosts=LOOPBACK)
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 403  # DNS rebinding


def test_serve_off_loopback_prints_a_token_once_and_requires_it(lm_workspace, cli_env):
    import urllib.error
    import urllib.request

    ws, cid = lm_workspace
    port = _free_port()
    proc = subprocess.Popen([*ARCHLAB, "serve", "--host", "0.0.0.0", "--port", str(port), "-w", str(ws)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=cli_env)
    try:
        token = None
        deadline = time.time() + 60
        while token is None and time.time() < deadline:
            line = proc.stderr.readline()
            found = re.search(r"access token .*: (\S+)$", line.strip())
            token = found.group(1) if found else None
        assert token, "no token printed"
        url = f"http://127.0.0.1:{port}/api/campaigns"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=2)
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the server never answered")
        ok = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}))
        assert json.loads(ok.read())["campaigns"][0]["id"] == cid
        assert token not in "".join(p.read_text(errors="ignore") for p in ws.rglob("*") if p.is_file())
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- the browser ----------------------------------------------------------------------------------

@pytest.fixture
def served(lm_workspace, tmp_path, cli_env):
    """`archlab serve` on a copy of the workspace, its analyst a scripted model (named as such:
    no hosted LLM can be called here)."""
    ws, cid = lm_workspace
    copy = tmp_path / "runs"
    shutil.copytree(ws, copy)
    script = tmp_path / "chat.json"
    script.write_text(json.dumps({"rules": [
        {"step": "chat:0:0", "response": {"tool_calls": [{"name": "leaderboard", "arguments": {"limit": 3}}]}},
        {"step": "chat:0:1", "response": "The leaderboard puts the best candidate first; see its row above."}]}))
    port = _free_port()
    env = {**cli_env, "ARCHLAB_LLM_MODEL": f"scripted/{script}", "OPENAI_API_KEY": SECRET}
    proc = subprocess.Popen([*ARCHLAB, "serve", "--port", str(port), "-w", str(copy)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_up(base, proc)
    yield base, copy, cid, env
    proc.terminate()
    proc.wait(timeout=20)


def _wait_up(base: str, proc: subprocess.Popen) -> None:
    import urllib.request

    for _ in range(150):
        if proc.poll() is not None:
            pytest.fail(f"archlab serve exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(base + "/", timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail("archlab serve never answered")


def _until(check, what: str, timeout: float = 30) -> None:
    """Poll from the test (the page's CSP forbids the string evaluation wait_for_function uses)."""
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.2)


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)


def _shots() -> Path:
    out = Path(os.environ.get("ARCHLAB_TEST_SCREENSHOTS", "/tmp/archlab-screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.slow
def test_a_person_reads_the_campaign_in_a_browser(served):
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    base, ws, cid, _ = served
    shots = _shots()
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + "/")
        page.click(f"a.campaign-link:text('{cid}')")
        expect(page.locator("h1")).to_have_text(cid)
        expect(page.locator("#leaderboard tbody tr")).to_have_count(8)
        _until(lambda: page.locator("img.plot").first.evaluate("img => img.naturalWidth") > 0, "a plot to draw")
        page.screenshot(path=str(shots / "campaign.png"), full_page=True)

        # follow the lineage tree to a child, then its parent link back up
        child = page.locator("#lineage details ul a.node").first
        child_id = child.inner_text().split()[0]
        child.click()
        expect(page.locator("h1")).to_contain_text(child_id)
        diff = page.locator("#diff")
        expect(diff).to_be_visible()
        assert re.search(r"^[-+] ", diff.inner_text(), re.M), "the diff shows no changed line"
        _until(lambda: page.locator("#curves").evaluate("img => img.naturalWidth") > 0, "the curves to draw")
        assert "import torch" in page.locator("#code").inner_text()
        page.screenshot(path=str(shots / "experiment.png"), full_page=True)
        parent = page.locator("a.parent-link")
        parent_id = parent.inner_text().split()[0]
        parent.click()
        expect(page.locator("h1")).to_contain_text(parent_id)
        expect(page.locator("a.child-link", has_text=child_id)).to_be_visible()

        # the analyst: a question, its tool call and result, then the answer, streamed
        page.goto(f"{base}/c/{cid}/chat")
        page.fill("#question", "Which candidate is best?")
        page.click("#ask")
        expect(page.locator(".msg.call")).to_contain_text("leaderboard", timeout=90_000)  # litellm loads first
        expect(page.locator("details.msg.tool summary")).to_contain_text("result of leaderboard")
        expect(page.locator(".msg.answer")).to_contain_text("The leaderboard puts the best candidate first")
        page.screenshot(path=str(shots / "chat.png"), full_page=True)
        # the conversation is kept with the CLI's: a reload shows it from the checkpoint
        page.reload()
        expect(page.locator(".msg.user")).to_contain_text("Which candidate is best?")
        expect(page.locator(".msg.answer")).to_contain_text("The leaderboard puts")

        page.goto(f"{base}/c/{cid}/replay")
        expect(page.locator("#steps > li:not(.hidden)")).to_have_count(1)
        page.click("#step-next")
        expect(page.locator("#steps > li:not(.hidden)")).to_have_count(2)
        assert not errors, errors
        browser.close()
    for name in ("campaign.png", "experiment.png", "chat.png"):
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_running_campaigns_page_updates_without_a_reload(served, nb201_table):
    _need_browser()
    from playwright.sync_api import sync_playwright

    base, ws, _, env = served
    run = subprocess.Popen([*ARCHLAB, "run", "--task", "nb201", "--table", str(nb201_table), "--budget", "30",
                            "--parallel", "1", "--strategy", "random", "-w", str(ws), "-q"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={k: v for k, v in env.items() if k != "ARCHLAB_LLM_MODEL"})
    try:
        deadline = time.time() + 120
        while not list(ws.glob("nb201-*/ledger.sqlite")) and time.time() < deadline:
            time.sleep(0.2)
        cid = next(ws.glob("nb201-*")).name
        with sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page()
            page.goto(f"{base}/c/{cid}")
            start = int(page.inner_text("#count-done"))
            page.evaluate("window.notReloaded = true")
            _until(lambda: int(page.inner_text("#count-done")) > start, "the done count to rise", 120)
            assert page.evaluate("window.notReloaded === true && window.archlabLive.updates > 0")
            assert page.locator("#leaderboard tbody tr").count() > 0
            browser.close()
    finally:
        run.terminate()
        run.wait(timeout=60)


def test_a_campaign_paused_by_an_outage_says_so(tmp_path, nb201_table):
    """A provider's outage (a scripted 429 on every call: the one thing that cannot be had for
    real here) pauses the campaign; its pages say paused, why, and how to continue."""
    from test_llm_campaign import scripted_config

    from archlab.campaign import Campaign
    from archlab.config import load_config

    _, over = scripted_config(tmp_path, nb201_table, [{"step": "research:0", "status": 429, "error": "slow down"}],
                              budget={"experiments": 3})
    campaign = Campaign.create(load_config(None, env={}, overrides=over))
    assert campaign.run().paused == "unreachable"
    cid, ws = campaign.folder.id, campaign.folder.root.parent
    client = _client(ws)
    assert client.get("/api/campaigns").json()["campaigns"][0]["status"]["state"] == "paused"
    page = client.get(f"/c/{cid}").text
    assert "Paused:" in page and "model unreachable" in page and f"archlab resume {cid}" in page
    assert ">paused<" in client.get("/").text


def test_memory_search_finds_an_experiment_by_what_it_says(lm_workspace):
    ws, cid = lm_workspace
    from archlab.memory.ledger import Ledger

    e = next(x for x in Ledger(ws / cid / "ledger.sqlite").experiments(origin=["campaign"]) if x.name)
    word = max(re.findall(r"[a-z_]{4,}", e.name.lower()), key=len)
    page = _client(ws).get(f"/memory?q={word}&campaign={cid}").text
    assert f'href="/c/{cid}/e/{e.id}"' in page and "ledger text search" in page
