"""The operator dashboard in a real browser (Debian's Chromium, driven headless by Playwright).

Three accounts, each on its own mock upstream; the first one throttles every request. The test
signs in with a wrong key (the login form comes back), then with the admin key; it sees the
three accounts and their states, the charts filled after a burst of requests, resets the
throttled account and sees it back, reloads the model catalogue, checks a phone-width layout,
that nothing secret is in the page or its API answers and that the browser logged no error,
and keeps a screenshot (DASHBOARD_SCREENSHOT, default target/dashboard.png).

Without Chromium the test is skipped, unless REQUIRE_BROWSER=1 (CI), which makes it fail.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from conftest import API_KEY, REPO, Mock, start_gateway, start_mock

ADMIN_KEY = "dashboard-admin-key-0123456789"
THROTTLED = json.dumps({"message": "Rate exceeded", "reason": "USER_REQUEST_RATE_EXCEEDED"})


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_BIN"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser_path() -> str:
    path = _chromium()
    if path is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but no Chromium found (apt-get install chromium)", pytrace=False)
        pytest.skip("no Chromium here (apt-get install chromium); REQUIRE_BROWSER=1 makes this a failure")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing (tests/clients/requirements.txt)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def three_accounts(tmp_path_factory: pytest.TempPathFactory):
    logdir = tmp_path_factory.mktemp("dashboard-procs")
    procs = []
    try:
        urls = {}
        for name in ("default", "b", "c"):
            proc, url = start_mock(logdir, name=f"mock-{name}")
            procs.append(proc)
            urls[name] = url
        throttled = Mock(urls["default"])
        for _ in range(40):
            throttled.reply_status(429, THROTTLED)
        accounts = [
            {
                "name": n,
                "refresh_token": "mock-refresh-0",
                "kiro_api_url": urls[n],
                "kiro_management_url": urls[n],
                "kiro_desktop_auth_url": urls[n],
                "kiro_oidc_url": urls[n],
            }
            for n in ("b", "c")
        ]
        accounts_file = logdir / "accounts.json"
        accounts_file.write_text(json.dumps(accounts))
        gw, gw_url = start_gateway(
            urls["default"],
            logdir,
            name="gateway-dashboard",
            # the throttled account stays cooling for the whole test, until the reset
            extra_env={"ADMIN_API_KEY": ADMIN_KEY, "KIRO_ACCOUNTS_FILE": str(accounts_file),
                       "ACCOUNT_COOLDOWN_SECS": "600"},
        )
        procs.append(gw)
        yield gw_url, throttled, gw
        throttled.close()
        # every request that reached a mock was well formed (the mock refuses what Kiro would)
        for name, url in urls.items():
            rejected = httpx.get(url + "/__mock/rejections", trust_env=False).json()
            assert rejected == [], f"mock {name} refused requests: {rejected}"
    finally:
        for p in reversed(procs):
            p.stop()


def _burst(gw_url: str, n: int) -> None:
    with httpx.Client(base_url=gw_url, trust_env=False, timeout=30.0,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        for i in range(n):
            r = c.post("/v1/chat/completions", json={
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": f"dashboard burst {i}"}],
            })
            assert r.status_code == 200, r.text
        # one failure for the failures table: an unknown model is the client's fault (400)
        r = c.post("/v1/chat/completions", json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400


def _secrets() -> list[str]:
    # the admin key, the client key, the mock's refresh and access tokens
    return [ADMIN_KEY, API_KEY, "mock-refresh-", "mock-access-"]


def test_the_dashboard_in_a_browser(browser_path, three_accounts):
    from playwright.sync_api import expect, sync_playwright

    gw_url, throttled, gw = three_accounts
    _burst(gw_url, 12)

    # the APIs the page reads: nothing secret in them either
    with httpx.Client(base_url=gw_url, trust_env=False, timeout=10.0,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        for path in ("/admin/stats", "/health/accounts"):
            r = admin.get(path)
            assert r.status_code == 200, r.text
            for s in _secrets():
                assert s not in r.text, f"{s!r} in {path}"
        stats = admin.get("/admin/stats").json()
        assert sum(stats["traffic"]["requests"]["2xx"]) >= 12
        assert stats["failures"][0]["status"] == 400
        r = httpx.get(gw_url + "/admin/stats", headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False)
        assert r.status_code == 401, "the client key is not the admin key"

    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or REPO / "target" / "dashboard.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("dialog", lambda d: d.accept())

            resp = page.goto(gw_url + "/dashboard")
            assert resp is not None and resp.status == 200
            assert "default-src 'none'" in resp.headers["content-security-policy"]
            # "loads in under 200 ms on loopback": the best of three loads, so that a cold
            # browser's first renderer start (which CI's shared cores can stretch past 200 ms on
            # its own) is not charged to the page; a page that is slow is slow every time
            loads = []
            for attempt in range(3):
                if attempt:
                    page.reload()
                loads.append(page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.domContentLoadedEventEnd - n.startTime; }"))
            assert min(loads) < 200, f"the page took {[round(x) for x in loads]} ms to load"
            html = page.content()
            for s in _secrets():
                assert s not in html

            # a wrong key: the login form again, saying so
            expect(page.locator("#login")).to_be_visible()
            page.fill("#key", "not-the-admin-key")
            page.click("#login button[type=submit]")
            expect(page.locator("#login-err")).to_contain_text("refused")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#app")).to_be_hidden()

            # the right key
            page.fill("#key", ADMIN_KEY)
            page.click("#login button[type=submit]")
            expect(page.locator("#app")).to_be_visible()
            rows = page.locator("#accounts tbody tr")
            expect(rows).to_have_count(3)
            state = lambda name: page.locator(f'#accounts tr[data-account="{name}"] .badge')
            expect(state("default")).to_have_text("cooling")
            expect(state("b")).to_have_text("ok")
            expect(state("c")).to_have_text("ok")
            expect(page.locator("#version")).not_to_have_text("–")
            # the charts have data points after the burst
            expect(page.locator("#chart-requests circle.point").first).to_be_attached()
            assert int(page.locator("#chart-requests svg").get_attribute("data-points")) > 0
            assert int(page.locator("#chart-ttfb svg").get_attribute("data-points")) > 0
            expect(page.locator("#failures tbody")).to_contain_text("no-such-model")
            expect(page.locator("#models tbody tr").first).to_be_attached()
            assert page.evaluate("() => sessionStorage.length") == 1
            assert ADMIN_KEY not in page.evaluate("() => document.cookie + location.href")
            page.screenshot(path=str(shot), full_page=True)

            # reset the throttled account (a confirmation, then its new state)
            page.click('#accounts tr[data-account="default"] button')
            expect(page.locator("#toast")).to_contain_text("reset: now ok")
            expect(state("default")).to_have_text("ok")
            # reload the model catalogue
            page.click("#reload-models")
            expect(page.locator("#toast")).to_contain_text("reloaded")

            # a phone-width screen: nothing wider than the screen
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(200)
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
            # and no sideways scrolling inside the accounts table either: each account's
            # state, requests, errors and Reset button lie within the screen
            inner = page.evaluate(
                "() => { const d = document.querySelector('#accounts').parentElement;"
                " return d.scrollWidth - d.clientWidth; }"
            )
            assert inner <= 0, f"the accounts table scrolls {inner} px sideways on a phone"
            for name in ("default", "b", "c"):
                row = f'#accounts tr[data-account="{name}"]'
                for part in ("td.state .badge", "td.requests", "td.errors", "td.reset button"):
                    box = page.locator(f"{row} {part}").bounding_box()
                    assert box is not None, f"{name}: {part} is not shown on a phone"
                    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, part, box)
            page.screenshot(path=str(shot.with_name(shot.stem + "-phone.png")), full_page=True)

            # signing out forgets the key
            page.click("#logout")
            expect(page.locator("#login")).to_be_visible()
            assert page.evaluate("() => sessionStorage.length") == 0
        finally:
            browser.close()
    assert not errors, "\n".join(errors)
