"""The review console in a real browser: Debian's chromium through chromium-driver (selenium)
against a real `keel serve` on 127.0.0.1, with real keys, registry and decision log.

Screenshots of every page go to KEEL_CONSOLE_SHOTS (default /tmp/console-shots).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.decision_log.database import Database
from keel.serving.keys import KeyStore
from tests.conftest import Store
from tests.integration.conftest import Server, make_keys, start_server
from tests.integration.test_service import cases_of

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("KEEL_CONSOLE_SHOTS", "/tmp/console-shots"))


def _browser(tmp: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def _console_server(store: Store, tmp: Path, **env: str) -> Server:
    log_url = f"sqlite:///{tmp / 'decisions.db'}"
    keys = make_keys(log_url, "console")
    store_ = KeyStore(Database(log_url))
    keys["review"] = store_.add("console-review", ["review"])
    srv = start_server(store, tmp, log_url, extra_env=env)
    srv.keys = keys
    return srv


@pytest.fixture(scope="module")
def console(
    store: Store, registered: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A server with decisions and feedback in its log: some overridden with reasons."""
    from keel.models.history import History, HistoryEntry

    srv = _console_server(store, tmp_path_factory.mktemp("console"))
    # An alias move with its gates in this log's history (no registry mirror: the session's
    # registry stays as it is): what the Changes page lists.
    gates = (
        {"criterion": "coverage at least the champion's", "passed": True, "detail": "0.97 >= 0.95"},
        {"criterion": "invariant to region", "passed": False, "detail": "2.1% of outcomes move"},
    )
    move = HistoryEntry(
        "routing", "champion", "promote", "1", "1", "rita", "forced for the audit", True, gates
    )
    History(srv.env["KEEL_DECISION_LOG_URL"]).append(move)
    try:
        with srv.client("decide") as c:
            decided = c.post("/v1/routing/decide", json={"cases": cases_of("routing", 40, 7)}).json()[
                "decisions"
            ]
        classes = sorted({d["outcome"] for d in decided if d["outcome"]} | {"legal", "procurement"})
        overridden = [d for d in decided if d["outcome"] and not d["abstained"]][:6]
        with srv.client("feedback") as c:
            for d in overridden:
                final = next(k for k in classes if k != d["outcome"])
                r = c.post(
                    "/v1/feedback",
                    json={
                        "decision_id": d["decision_id"],
                        "final_outcome": final,
                        "actor": "rita",
                        "reason": "wrong queue",
                    },
                )
                assert r.status_code in (200, 201), r.text
        yield srv, {"decided": decided, "overridden": overridden}
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        missing = "needs Debian's chromium and chromium-driver (`make test` installs them as root)"
        # .ci/run sets it: there the browser is part of the run, so its absence is a failure.
        if os.environ.get("KEEL_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    driver = _browser(tmp_path_factory.mktemp("chromium"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(driver: Any, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/console/sign-in")
    driver.find_element(By.ID, "key").send_keys(key)
    _follow(driver, (By.CSS_SELECTOR, "form.sign-in button[type=submit]"))


def _follow(driver: Any, target: Any) -> None:
    """Click and wait until the next page has replaced this one. `target` is an element, or a
    (By, value) locator found afresh on each try: a page still settling can replace the element
    between finding and clicking it (chromedriver: "Node ... does not belong to the document").

    The wait marks this page's window object and waits for a window without the mark: every
    navigation makes a new one. (Selenium's `staleness_of` asks chromedriver about the old node,
    which after navigation sometimes answers that inspector error instead of "stale", seen in CI.)
    """
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    driver.execute_script("window.__keelLeaving = true;")
    for attempt in range(3):
        try:
            element = driver.find_element(*target) if isinstance(target, tuple) else target
            element.click()
            break
        except (StaleElementReferenceException, WebDriverException):
            if not isinstance(target, tuple) or attempt == 2:
                raise
            if not driver.execute_script("return window.__keelLeaving === true;"):
                break  # the click went through before the error: the page is already replaced

    def replaced(d: Any) -> bool:
        ready = d.execute_script(
            "return window.__keelLeaving === undefined && document.readyState === 'complete';"
        )
        return bool(ready)

    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(replaced)


def _shot(driver: Any, name: str) -> None:
    """The whole page (the window grown to its height for the shot)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1400, min(max(height, 1000), 8000))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def _one_h1(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    headings = driver.find_elements(By.TAG_NAME, "h1")
    assert len(headings) == 1, [h.text for h in headings]
    return str(headings[0].text)


def test_sign_in_walk_every_page_search_open_a_decision_and_follow_an_override(
    console: tuple[Server, dict[str, Any]], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    srv, seeded = console
    browser.get(f"{srv.url}/console")
    assert "/console/sign-in" in browser.current_url  # no session: sent to sign in
    _shot(browser, "0-sign-in")
    _sign_in(browser, srv.url, srv.keys["review"])
    assert browser.current_url.endswith("/console") and _one_h1(browser) == "Overview"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "routing" in body and "champion" in body and "console-review" in body
    assert "No monitoring runs recorded yet" in body
    _shot(browser, "1-overview")

    for label, h1, shot in (
        ("Review queue", "Review queue", "4-queue"),
        ("Changes", "Changes", "6-changes"),
        ("Decisions", "Decisions", "2-decisions"),
    ):
        _follow(browser, (By.LINK_TEXT, label))
        assert _one_h1(browser) == h1
        _shot(browser, shot)
        if h1 == "Changes":
            text = browser.find_element(By.TAG_NAME, "main").text
            assert "forced for the audit" in text and "failed: invariant to region" in text
            assert "The alias history's hash chain verifies." in text

    # search by model and case id, then open the decision
    target = seeded["overridden"][0]
    browser.find_element(By.ID, "case_id").send_keys(target["case_id"])
    _follow(browser, (By.CSS_SELECTOR, "form.search button[type=submit]"))
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert len(rows) == 1 and target["case_id"] in rows[0].text
    _follow(browser, rows[0].find_element(By.TAG_NAME, "a"))
    assert _one_h1(browser) == f"Decision {target['case_id']}"
    text = browser.find_element(By.TAG_NAME, "main").text
    assert (
        target["decision_id"] in text and "verifies" in text and "wrong queue" in text and "override" in text
    )
    assert browser.find_elements(By.CSS_SELECTOR, "svg.waterfall rect")
    _shot(browser, "3-decision")

    # before any monitor run, the aggregate pages say so and what to run
    for label in ("Overrides", "Review queue"):
        _follow(browser, (By.LINK_TEXT, label))
        assert _one_h1(browser) == label
        text = browser.find_element(By.TAG_NAME, "main").text
        assert (
            "No monitor run of routing has stored this summary yet" in text and "keel monitor routing" in text
        )
        _shot(browser, "5-overrides" if label == "Overrides" else "4b-queue")
    # the queue's live list (a search, not a summary) already lists the cases waiting for a person
    listed = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#q-open ~ table tbody tr th a")}
    routed = {
        d["case_id"] for d in seeded["decided"] if d["route"] != "auto" and d not in seeded["overridden"]
    }
    assert routed <= listed

    # keyboard: the first Tab reaches the skip link
    from selenium.webdriver.common.keys import Keys

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"

    _follow(browser, (By.CSS_SELECTOR, "form.who button"))  # sign out
    assert "/console/sign-in" in browser.current_url
    browser.get(f"{srv.url}/console/decisions")
    assert "/console/sign-in" in browser.current_url

    # a link followed while signed out comes back to its page after sign-in
    browser.get(f"{srv.url}/console/decisions/{target['decision_id']}")
    assert "/console/sign-in?next=" in browser.current_url
    browser.find_element(By.ID, "key").send_keys(srv.keys["read"])
    _follow(browser, (By.CSS_SELECTOR, "form.sign-in button[type=submit]"))
    assert browser.current_url == f"{srv.url}/console/decisions/{target['decision_id']}"


def test_a_key_without_read_or_review_is_refused_at_sign_in(
    console: tuple[Server, dict[str, Any]], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    srv, _ = console
    for role in ("decide", "feedback", "admin"):
        _sign_in(browser, srv.url, srv.keys[role])
        assert "/console/sign-in" in browser.current_url
        assert "neither the read nor the review role" in browser.find_element(By.CSS_SELECTOR, ".alert").text
        assert browser.get_cookie("keel_console") is None
    _shot(browser, "7-refused")
    _sign_in(browser, srv.url, "keel_not-a-key")
    assert "unknown or revoked" in browser.find_element(By.CSS_SELECTOR, ".alert").text


def _http_sign_in(srv: Server, key: str) -> httpx.Client:
    client = httpx.Client(base_url=srv.url, timeout=30, follow_redirects=False)
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    done = client.post("/console/sign-in", data={"csrf": token.group(1), "key": key})
    assert done.status_code == 303 and "keel_console" in client.cookies
    return client


def test_forged_posts_without_the_csrf_token_are_403_and_pages_carry_the_security_headers(
    console: tuple[Server, dict[str, Any]],
) -> None:
    srv, _ = console
    assert srv.log_path is not None  # no KEEL_CONSOLE_SECRET: made in KEEL_HOME, and said so
    ready = next(line for line in srv.log_path.read_text().splitlines() if "ready on" in line)
    assert "replicas need the same KEEL_CONSOLE_SECRET" in ready
    secret = Path(srv.env["KEEL_HOME"]) / "console-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    with closing(_http_sign_in(srv, srv.keys["read"])) as client:
        page = client.get("/console/decisions")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        for part in (
            "default-src 'none'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ):
            assert part in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (
            page.headers["referrer-policy"] == "same-origin" and page.headers["cache-control"] == "no-store"
        )
        assert "http://" not in page.text.replace(srv.url, "") and "<script" not in page.text
        assert client.post("/console/sign-out", data={}).status_code == 403
        assert client.post("/console/sign-out", data={"csrf": "forged"}).status_code == 403
        assert client.get("/console/decisions").status_code == 200  # still signed in
    # behind a TLS proxy the cookies are Secure; over plain HTTP they cannot be (the browser
    # would never send them back)
    with httpx.Client(base_url=srv.url, timeout=30, headers={"X-Forwarded-Proto": "https"}) as tls:
        form = tls.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None and "Secure" in form.headers["set-cookie"]
        # httpx keeps a Secure cookie for https only: hand the pre-session cookie back by hand
        pre = form.cookies["keel_console_sign_in"]
        tls.cookies.clear()
        done = tls.post(
            "/console/sign-in",
            data={"csrf": token.group(1), "key": srv.keys["read"]},
            headers={"Cookie": f"keel_console_sign_in={pre}"},
        )
        assert done.status_code == 303, done.text
        session = [c for c in done.headers.get_list("set-cookie") if c.startswith("keel_console=")]
        assert session and all(
            f in session[0] for f in ("HttpOnly", "SameSite=Strict", "Path=/console", "Secure")
        )
    plain = httpx.get(f"{srv.url}/console/sign-in", timeout=30)
    assert "Secure" not in plain.headers["set-cookie"] and "HttpOnly" in plain.headers["set-cookie"]
    css = httpx.get(f"{srv.url}/console/static/console.css", timeout=30)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "default-src 'none'" in css.headers["content-security-policy"]
    assert httpx.get(f"{srv.url}/console/static/other.js", timeout=30).status_code == 404
    # a forged sign-in (another site's form: no pre-session cookie, no token) is refused too
    forged = httpx.post(f"{srv.url}/console/sign-in", data={"key": srv.keys["read"]}, timeout=30)
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    # the API's bearer keys do not open console pages, and console sessions do not open the API
    bare = httpx.get(f"{srv.url}/console", headers={"Authorization": f"Bearer {srv.keys['read']}"})
    assert bare.status_code == 303 and bare.headers["location"] == "/console/sign-in?next=%2Fconsole"
    with closing(_http_sign_in(srv, srv.keys["read"])) as client:
        assert client.get("/v1/models").status_code == 401
        csv = client.get("/console/decisions.csv", params={"model": "routing"})
        assert (
            csv.status_code == 200 and csv.text.startswith("decision_id,") and len(csv.text.splitlines()) > 10
        )


def test_the_csv_export_holds_what_the_search_shows_and_quotes_formula_like_cells(
    console: tuple[Server, dict[str, Any]],
) -> None:
    import csv
    import io

    from keel.decision_log import search
    from keel.decision_log.search import DecisionQuery

    srv, seeded = console
    case = cases_of("routing", 1, 11)[0] | {"case_id": '=HYPERLINK("http://evil.example","x")'}
    with srv.client("decide") as c:
        formula = c.post("/v1/routing/decide", json={"cases": [case]}).json()["decisions"][0]
    seeded["decided"].append(formula)  # the module's other tests count the log's decisions
    with closing(_http_sign_in(srv, srv.keys["read"])) as client:
        exported = client.get("/console/decisions.csv", params={"model": "routing"})
    assert exported.status_code == 200
    assert exported.headers["content-disposition"] == 'attachment; filename="decisions.csv"'
    rows = {r["decision_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    assert rows[formula["decision_id"]]["case_id"] == "'" + case["case_id"]  # shown as text, never run
    day = seeded["decided"][0]["created_at"][:10]
    shown, _ = search.search(
        Database(srv.env["KEEL_DECISION_LOG_URL"]),
        DecisionQuery(since=f"{day}T00:00:00+00:00", until="9999-12-31", model="routing"),
        limit=200,
    )
    assert set(rows) == {r["decision_id"] for r in shown}
    for r in shown:
        row = rows[r["decision_id"]]
        latest = (r["final_outcome"] or "", r["feedback_kind"] or "")
        assert (row["final_outcome"], row["feedback_kind"]) == latest
        assert {f: row[f] for f in r["segments"]} == {f: str(v) for f, v in r["segments"].items()}
    overridden = {d["decision_id"] for d in seeded["overridden"]}
    assert {i for i, row in rows.items() if row["feedback_kind"] == "override"} == overridden


def test_a_revoked_key_ends_its_session(console: tuple[Server, dict[str, Any]], tmp_path: Path) -> None:
    srv, _ = console
    log_url = srv.env["KEEL_DECISION_LOG_URL"]
    keys = KeyStore(Database(log_url))
    key = keys.add("console-short-lived", ["read"])
    with closing(_http_sign_in(srv, key)) as client:
        assert client.get("/console").status_code == 200
        keys.revoke("console-short-lived")
        deadline = time.monotonic() + 15
        while client.get("/console").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.3)  # the service re-reads its key set every couple of seconds
        gone = client.get("/console")
        assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in?next=%2Fconsole"


def test_an_expired_session_is_sent_to_sign_in(
    store: Store, registered: dict[str, str], tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    srv = _console_server(
        store, tmp_path, KEEL_CONSOLE_SESSION_MINUTES="0.15", KEEL_CONSOLE_SECRET="shared-by-the-replicas"
    )  # sessions of 9 seconds: long enough to sign in on a busy machine
    try:
        assert srv.log_path is not None
        ready = next(line for line in srv.log_path.read_text().splitlines() if "ready on" in line)
        assert f"review console {srv.url}/console" in ready and "KEEL_CONSOLE_SECRET" not in ready
        _sign_in(browser, srv.url, srv.keys["read"])
        assert _one_h1(browser) == "Overview"
        time.sleep(10)
        browser.get(f"{srv.url}/console/queue")
        assert "/console/sign-in" in browser.current_url
        assert browser.find_element(By.ID, "key").get_attribute("type") == "password"
    finally:
        srv.stop()


def test_search_pages_by_keyset_filters_by_segment_and_feedback_and_checks_one_rows_chain(
    console: tuple[Server, dict[str, Any]], tmp_path: Path
) -> None:
    from keel.decision_log import search
    from keel.decision_log.log_key import NO_KEYS
    from keel.decision_log.search import DecisionQuery

    srv, seeded = console
    db = Database(srv.env["KEEL_DECISION_LOG_URL"])
    day = seeded["decided"][0]["created_at"][:10]
    everything = DecisionQuery(since=f"{day}T00:00:00+00:00", until="9999-12-31", model="routing")
    seen: list[int] = []
    query = everything
    while True:
        page, after = search.search(db, query, limit=15)
        assert len(page) <= 15 and [r["seq"] for r in page] == sorted((r["seq"] for r in page), reverse=True)
        seen += [r["seq"] for r in page]
        if after is None:
            break
        query = DecisionQuery(**{**everything.__dict__, "before_seq": after})
    assert len(seen) == len(set(seen)) == len(seeded["decided"])
    overridden, _ = search.search(db, DecisionQuery(**{**everything.__dict__, "overridden": True}))
    assert {r["decision_id"] for r in overridden} == {d["decision_id"] for d in seeded["overridden"]}
    assert all(r["feedback_kind"] == "override" for r in overridden)
    not_overridden, _ = search.search(
        db, DecisionQuery(**{**everything.__dict__, "overridden": False}), limit=200
    )
    assert len(not_overridden) == len(seeded["decided"]) - len(seeded["overridden"])
    region = seeded["overridden"][0]
    one, _ = search.search(db, DecisionQuery(**{**everything.__dict__, "case_id": region["case_id"]}))
    value = one[0]["segments"]["region"]
    by_region, _ = search.search(
        db, DecisionQuery(**{**everything.__dict__, "segments": {"region": value}}), 200
    )
    assert by_region and all(r["segments"]["region"] == value for r in by_region)
    nothing, _ = search.search(db, DecisionQuery(**{**everything.__dict__, "segments": {"region": "%"}}))
    assert nothing == []  # a LIKE wildcard is matched literally
    assert len(list(search.stream(db, everything, limit=7))) == 7

    # one row's place in the chain: intact, then with its content edited in a copy of the log
    target = seeded["decided"][5]["decision_id"]
    place = search.chain_place(db, NO_KEYS, target)
    assert place is not None and place.problem is None and place.content_ok and place.linked_before
    copy = tmp_path / "edited.db"
    shutil.copy(db.sqlite_path, copy)
    for suffix in ("-wal", "-shm"):
        if Path(f"{db.sqlite_path}{suffix}").exists():
            shutil.copy(f"{db.sqlite_path}{suffix}", f"{copy}{suffix}")
    edited = Database(f"sqlite:///{copy}")
    with edited.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE decisions SET outcome = 'legal' WHERE decision_id = ?", (target,))
    broken = search.chain_place(edited, NO_KEYS, target)
    assert broken is not None and not broken.content_ok and "does not match" in (broken.problem or "")
    edited.dispose()


def test_every_page_and_search_runs_on_a_postgresql_log(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from keel.decision_log import export, search
    from keel.decision_log.log_key import NO_KEYS
    from keel.decision_log.search import DecisionQuery
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.workload import answer_times, queue
    from tests.conftest import fresh_postgres_database

    with fresh_postgres_database("keel_console") as url:
        keys = make_keys(url, "pg")
        srv = start_server(store, tmp_path, url)
        srv.keys = keys
        db = Database(url)
        try:
            with srv.client("decide") as c:
                decided = c.post("/v1/routing/decide", json={"cases": cases_of("routing", 30, 11)}).json()
            decided = decided["decisions"]
            target = next(d for d in decided if d["outcome"] and not d["abstained"])
            final = "legal" if target["outcome"] != "legal" else "procurement"
            with srv.client("feedback") as c:
                body = {
                    "decision_id": target["decision_id"],
                    "final_outcome": final,
                    "actor": "p",
                    "reason": "why",
                }
                assert c.post("/v1/feedback", json=body).status_code == 201
            since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
            query = DecisionQuery(since=since, until="9999-12-31", model="routing")
            page, after = search.search(db, query, limit=20)
            assert len(page) == 20 and after is not None
            rest, last = search.search(db, DecisionQuery(**{**query.__dict__, "before_seq": after}), limit=20)
            assert len(rest) == 10 and last is None
            over, _ = search.search(
                db, DecisionQuery(**{**query.__dict__, "overridden": True, "final_outcome": final})
            )
            assert [r["decision_id"] for r in over] == [target["decision_id"]]
            region = over[0]["segments"]["region"]
            seg, _ = search.search(
                db, DecisionQuery(**{**query.__dict__, "segments": {"region": region}}), 200
            )
            assert target["decision_id"] in {r["decision_id"] for r in seg}
            assert all(r["segments"]["region"] == region for r in seg)
            # the monitor's workload reads on PostgreSQL: the queue is what the console's search
            # calls queued and unanswered (routed, or selected for audit: JSON read two ways)
            reader = LogReader(db)
            start, end = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(minutes=1)
            waiting = DecisionQuery(
                since=since, until="9999-12-31", origin="live", queued=True, answered=False
            )
            found = queue(reader, "routing", start, end, ["region"])
            assert found["open"] == len(search.search(db, waiting, 200)[0]) > 0
            assert sum(g["n"] for g in found["by_segment"]["region"]["groups"]) == found["open"]
            times = answer_times(reader, "routing", start, end, ["region"])
            assert times["answered"] == 1 and times["by_route"][0]["p50"] >= 0
            place = search.chain_place(db, NO_KEYS, target["decision_id"])
            assert place is not None and place.problem is None
            # the CSV export: PostgreSQL writes it (COPY) as Python's csv module would, formula
            # quoting included
            with srv.client("decide") as c:
                case = cases_of("routing", 1, 12)[0] | {"case_id": "@SUM(A1:A9)"}
                assert c.post("/v1/routing/decide", json={"cases": [case]}).status_code == 200
            by_server = b"".join(export.csv_pieces(db, query, 100))
            assert by_server == b"".join(export.csv_pieces(db, query, 100, by_server=False))
            lines = by_server.decode().splitlines()
            assert len(lines) == 1 + 31 and lines[1].split(",")[4] == "'@SUM(A1:A9)"
            with closing(_http_sign_in(srv, srv.keys["read"])) as client:
                for path in ("/console", "/console/decisions", "/console/queue", "/console/overrides",
                             "/console/changes", f"/console/decisions/{target['decision_id']}"):  # fmt: skip
                    assert client.get(path).status_code == 200, path
                assert "verifies" in client.get(f"/console/decisions/{target['decision_id']}").text
        finally:
            srv.stop()
            db.dispose()


def test_monitoring_runs_show_on_the_overview_their_pages_the_trends_and_on_a_second_replica(
    console: tuple[Server, dict[str, Any]], browser: Any, store: Store, tmp_path: Path
) -> None:
    """A real `keel monitor` over the console's log: its verdicts and recommendation on the
    Overview, the run on the Monitoring page and its own page, trend charts after a second run,
    and the same run on a second `keel serve` over the same KEEL_HOME and log. Runs last in this
    module: the first test reads the Overview before any run is recorded."""
    from selenium.webdriver.common.by import By

    from keel.monitoring import checks, runs
    from tests.conftest import cli_env, run_keel

    srv, seeded = console
    url = srv.env["KEEL_DECISION_LOG_URL"]
    env = cli_env(store, KEEL_DECISION_LOG_URL=url)
    db = Database(url)
    _shadow_decisions(db, srv, seeded["decided"])
    args = ("monitor", "routing", "--window", "2h", "--out", str(tmp_path / "reports"))
    first = run_keel(env, *args, timeout=600)
    assert first.returncode in (0, 1, 2), first.stdout + first.stderr
    (run,) = runs.runs(db, "routing")
    run_path = f"/console/runs/{run.run_id}"

    _sign_in(browser, srv.url, srv.keys["read"])
    assert _one_h1(browser) == "Overview"
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "No monitoring runs recorded yet:" not in main  # the page-wide note is gone
    assert "No monitoring runs recorded yet for routing" not in main
    assert "No monitoring runs recorded yet for discount_band" in main  # not monitored
    assert "Recommended action:" in main and "Latest check verdicts of routing" in main
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    titles = {r.find_element(By.TAG_NAME, "th").text for r in rows}
    assert {checks.title(v["check"]) for v in run.verdicts} <= titles  # every check of the run
    marks = browser.find_elements(By.CSS_SELECTOR, "main svg.marks")
    assert len(marks) == len(run.verdicts)
    assert all("(oldest first)" in (m.get_attribute("aria-label") or "") for m in marks)
    alerts = [v for v in run.verdicts if v["status"] in ("warn", "alert")]
    if alerts:
        assert f"Open alerts ({len(alerts)})" in main
    else:
        assert "No open alerts" in main
    links = browser.find_elements(By.CSS_SELECTOR, f'main a[href="{run_path}"]')
    assert links, "the recommended action links to its run"
    _shot(browser, "mon-1-overview")

    _follow(browser, (By.LINK_TEXT, "Monitoring"))
    assert _one_h1(browser) == "Monitoring"
    listed = browser.find_elements(By.CSS_SELECTOR, f'main a[href="{run_path}"]')
    assert len(listed) == 1 and listed[0].text == run.generated_at[:19].replace("T", " ")
    assert run.status.replace("_", " ") in browser.find_element(By.TAG_NAME, "main").text
    _shot(browser, "mon-2-monitoring")
    _follow(browser, listed[0])
    assert _one_h1(browser) == "Monitoring run of routing"
    text = browser.find_element(By.TAG_NAME, "main").text
    assert run.run_id in text and str(run.report_dir) in text
    assert (run.mlflow_run_id or "not recorded in MLflow") in text
    for heading in ("Checks", "Process drift", "Human overrides", "Concept drift by segment"):
        assert browser.find_elements(By.XPATH, f"//h2[normalize-space()='{heading}']"), heading
    verdict_rows = browser.find_elements(By.CSS_SELECTOR, "main table:first-of-type tbody tr")
    assert len(verdict_rows) == len(run.verdicts)
    assert "wrong queue" in text  # the seeded overrides' reason, from the stored summary
    _shot(browser, "mon-3-run")

    # the run stored the review workload: an override count leads to exactly its cases
    _follow(browser, (By.LINK_TEXT, "Overrides"))
    assert _one_h1(browser) == "Overrides"
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "wrong queue" in text and f"{len(seeded['overridden'])} overridden decision(s)" in text
    _shot(browser, "mon-6-overrides")
    link = browser.find_element(By.CSS_SELECTOR, "main table tbody td a")
    count = int(link.text)
    _follow(browser, link)
    assert _one_h1(browser) == "Decisions"
    found = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert len(found) == count and all("(override)" in r.text for r in found)
    _shot(browser, "mon-7-override-cases")

    # the queue's count leads to exactly the cases still waiting for a person
    _follow(browser, (By.LINK_TEXT, "Review queue"))
    _shot(browser, "mon-8-queue")
    waiting = browser.find_element(By.CSS_SELECTOR, "p.big a")
    count = int(waiting.find_element(By.TAG_NAME, "strong").text)
    routed = {
        d["case_id"] for d in seeded["decided"] if d["route"] != "auto" and d not in seeded["overridden"]
    }
    assert count >= len(routed)  # and the cases selected for audit
    assert browser.find_elements(By.CSS_SELECTOR, "main svg.chart"), "queue over runs"
    _follow(browser, waiting)
    found = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr th a")
    assert len(found) == count and routed <= {a.text for a in found}

    # the run stored its champion vs shadow comparison: the Changes page shows it
    _follow(browser, (By.LINK_TEXT, "Changes"))
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Shadow v9 vs champion by segment" in text and "paired with the live decision" in text
    rows = browser.find_elements(By.CSS_SELECTOR, "main table.compare tbody tr")
    assert rows[0].find_element(By.TAG_NAME, "th").text == "all cases"
    assert rows[0].find_elements(By.TAG_NAME, "td")[0].text == str(len(seeded["decided"]))
    _shot(browser, "mon-5-changes")

    second = run_keel(env, *args, timeout=600)
    assert second.returncode in (0, 1, 2), second.stdout + second.stderr
    assert len(runs.runs(db, "routing")) == 2
    browser.get(f"{srv.url}/console/monitoring/routing")
    assert _one_h1(browser) == "Monitoring routing"
    charts = browser.find_elements(By.CSS_SELECTOR, "main svg.chart")
    titles = [c.find_element(By.TAG_NAME, "title").get_attribute("textContent") for c in charts]
    assert titles == [
        "Override rate of routing with its 95% interval",
        "Abstention rate of routing",
        "Share of drifted input features of routing",
        "Process drift of routing: worst segment's override-rate ratio",
        "Sequential evidence of routing (share of what an alarm needs)",
    ]
    assert charts[1].find_elements(By.TAG_NAME, "polyline"), "two runs: the abstention rate is a line"
    assert len(browser.find_elements(By.CSS_SELECTOR, "main details table")) == len(charts)
    _shot(browser, "mon-4-monitoring-model")
    browser.get(f"{srv.url}/console")
    two = browser.find_elements(By.CSS_SELECTOR, "main svg.marks")[0]
    assert len(two.find_elements(By.TAG_NAME, "rect")) == 2  # the last runs' marks, oldest first
    _shot(browser, "mon-1b-overview-two-runs")

    # a second replica on the same KEEL_HOME (so the same console secret) and the same log
    (tmp_path / "replica").mkdir()
    replica = start_server(store, tmp_path / "replica", url)
    try:
        newest = runs.runs(db, "routing")[0]
        for server in (srv, replica):
            with closing(_http_sign_in(server, srv.keys["read"])) as client:
                page = client.get(run_path)
                assert page.status_code == 200 and run.run_id in page.text, server.url
                overview = client.get("/console")
                assert f'href="/console/runs/{newest.run_id}"' in overview.text, server.url
                listing = client.get("/console/monitoring/routing")
                assert listing.text.count('href="/console/runs/') >= 2 * 5, server.url  # charts' tables
        browser.get(f"{replica.url}{run_path}")  # the browser's session is good on the replica too
        assert _one_h1(browser) == "Monitoring run of routing"
    finally:
        replica.stop()
        db.dispose()


def _shadow_decisions(db: Database, srv: Server, decided: list[dict[str, Any]]) -> None:
    """A shadow v9 decision beside each live one, appended to the log as the shadow thread would
    log it (origin shadow, `shadow_of` the live decision): what `keel monitor` compares."""
    import uuid
    from datetime import UTC, datetime

    from keel.decision_log.bulk import BulkLoader
    from keel.decision_log.settings import LogSettings
    from tests.integration.test_console_comparison import _row

    key_file = srv.env.get("KEEL_LOG_KEY_FILE")
    rows = []
    for i, d in enumerate(decided):
        record = {
            "decision_id": str(uuid.uuid4()),
            "shadow_of": d["decision_id"],
            "versions": {"alias": "shadow"},
        }
        row = _row(i, "shadow", record, d["outcome"], ("NA", "EMEA", "APAC")[i % 3])
        rows.append({**row, "model_version": "9", "created_at": datetime.now(UTC).isoformat()})
    loader = BulkLoader(db, settings=LogSettings(key_file=Path(key_file) if key_file else None))
    assert loader.load("decisions", rows) == len(decided)
