"""The dashboard in a real browser (Debian's headless Chromium, driven by selenium), and
its token checked over plain HTTP, against a real engine daemon and broker.

Set ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` to keep the browser's screenshot (the
README shows the one committed).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

import pytest
import warren
from support import REPO, EngineProcess, engine_running, forget_environment, wait_until
from warren.config import settings
from warren.wire import broker_urls, topology
from warren.wire.amqp import Connection
from warren.wire.session import BrokerSession
from warren_engine.daemon.dashboard.log_tail import LogTail

pytestmark = pytest.mark.slow

app = warren.App("test-dashboard")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.function(retries=warren.Retries(1, initial_delay=0.1))
def checked(x: int, delay: float = 0.0) -> int:
    print(f"checking {x}")
    time.sleep(delay)
    if x % 50 == 0:
        raise ValueError(f"bad input {x}")
    return x


@app.function()
@warren.web_endpoint(method="GET")
def hello(name: str) -> str:
    return f"hello {name}"


POLL_SETTLE = 2.5  # one poll of the page: the panel is drawn again with the row open
SQUARE = "environment=main&instance=test-dashboard&function=square"
API = ("overview", "history", "failures", "logs", "dead-letters")
URL_LINE = re.compile(rb"dashboard: (http://\S+)/\?token=(\S+)")


@dataclass
class Dashboard:
    engine: EngineProcess
    base: str
    token: str
    log: Path


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dashboard")
    log = root / "engine.log"
    with engine_running(root / "state", log=log) as engine:
        assert wait_until(lambda: URL_LINE.search(log.read_bytes()) is not None, 30)
        found = URL_LINE.search(log.read_bytes())
        assert found is not None
        app.deploy()
        yield Dashboard(engine, found[1].decode(), found[2].decode(), log)


# -- over plain HTTP ------------------------------------------------------------------------


class _NoRedirects(HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 303 itself is what the test reads


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    opener = build_opener(_NoRedirects)
    try:
        with opener.open(Request(url, headers=headers or {}), timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_without_the_token_the_page_and_every_data_endpoint_answer_401(
    dashboard: Dashboard,
) -> None:
    # Given a running engine's dashboard, When anything of it is asked for without the token
    paths = ["/", "/_dashboard/static/dashboard.js", *(f"/_dashboard/api/{name}" for name in API)]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Cookie": "x=y"}):
            status, _, body = http_get(dashboard.base + path, headers)
            # Then it answers 401, and says nothing of what it guards
            assert status == 401, (path, headers)
            assert b"test-dashboard" not in body
    assert http_get(f"{dashboard.base}/?token=wrong-token-of-some-length")[0] == 401
    # And with the token as a bearer token, each answers
    bearer = {"Authorization": f"Bearer {dashboard.token}"}
    for name in API:
        query = f"?{SQUARE}" if name == "logs" else ""
        status, headers, body = http_get(f"{dashboard.base}/_dashboard/api/{name}{query}", bearer)
        assert status == 200, (name, body)
        assert headers["Content-Type"].startswith("application/json")
        assert headers["Cache-Control"] == "no-store"
    # And a pool named with what no name can be is a 400, not a look at the broker
    bad = f"{dashboard.base}/_dashboard/api/logs?environment=../x&instance=a&function=b"
    assert http_get(bad, bearer)[0] == 400
    unknown = f"{dashboard.base}/_dashboard/api/logs?environment=elsewhere&instance=a&function=b"
    assert http_get(unknown, bearer)[0] == 404


def test_the_token_in_the_address_becomes_a_strict_cookie_and_leaves_the_address(
    dashboard: Dashboard,
) -> None:
    # When a browser opens the printed address
    status, headers, _ = http_get(f"{dashboard.base}/?token={dashboard.token}#x")
    # Then it is sent to the same page without the token, with an HttpOnly strict cookie
    assert status == 303
    assert headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert dashboard.token not in cookie  # the cookie holds a value derived from it
    pair = cookie.split(";")[0]
    assert http_get(f"{dashboard.base}/_dashboard/api/overview", {"Cookie": pair})[0] == 200
    # And the token was written once, on the line that printed the address, and in no log
    assert dashboard.log.read_bytes().count(dashboard.token.encode()) == 1


def test_a_made_token_is_kept_in_the_state_directory_for_its_user_only(
    dashboard: Dashboard,
) -> None:
    kept = dashboard.engine.state_dir / "dashboard-token"
    assert kept.read_text().strip() == dashboard.token
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


TAIL_ENVIRONMENT = "test-dashboard-tail"


def _rabbitmqctl(*args: str) -> list[list[str]]:
    listed = subprocess.run(
        ["rabbitmqctl", *args, "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("\t") for line in listed.stdout.splitlines() if "\t" in line]


def _consumers_of(connection_name: str) -> int:
    """Consumers on the channels of the connection of this name (the broker's count)."""
    mark = f'{{"connection_name","{connection_name}"}}'
    ours = [
        row[0]
        for row in _rabbitmqctl("list_connections", "name", "client_properties")
        if mark in row[1]
    ]
    return sum(
        int(count)
        for name, count in _rabbitmqctl("list_channels", "name", "consumer_count")
        if any(name.startswith(f"{connection} (") for connection in ours)
    )


@pytest.fixture
async def log_stream() -> AsyncIterator[str]:
    """A log stream of the test's own environment, forgotten after."""
    connection = await broker_urls.connect(settings().broker_url)
    try:
        await topology.declare_log_stream(await connection.channel(), TAIL_ENVIRONMENT)
    finally:
        await connection.close()
    yield TAIL_ENVIRONMENT
    await asyncio.to_thread(forget_environment, TAIL_ENVIRONMENT)


async def _settles_at(name: str, expected: int) -> bool:
    """Whether the connection's consumers come to ``expected`` (the broker counts a stream's
    consumer a moment after it answers the consume)."""
    return await asyncio.to_thread(wait_until, lambda: _consumers_of(name) == expected, 10, 0.2)


async def test_a_log_tail_nobody_asks_for_stops_reading_the_stream(log_stream: str) -> None:
    # Given a log tail of an environment's stream, on a connection of its own
    name = f"test-dashboard-tail-{uuid.uuid4().hex[:8]}"
    session = BrokerSession(settings().broker_url, name, _nothing_to_set_up)
    await session.start()
    try:
        tail = LogTail(session, idle=1.0)
        assert _consumers_of(name) == 0
        # When lines are asked for, Then it reads the stream, with a consumer
        assert await tail.lines(log_stream, "app", "square") == ()
        assert await _settles_at(name, 1)
        await tail.lines(log_stream, "app", "square")
        await tail.close_idle()  # asked for just now: kept
        assert _consumers_of(name) == 1
        # When nobody asks for a while, Then it stops reading
        await asyncio.sleep(1.2)
        await tail.close_idle()
        assert await _settles_at(name, 0)
        await tail.close()
    finally:
        await session.close()


async def _nothing_to_set_up(connection: Connection, first: bool) -> None:
    pass


# -- in a browser ---------------------------------------------------------------------------


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        if not Path("/etc/debian_version").exists():
            pytest.skip("needs Debian's chromium and chromium-driver packages (not Debian)")
        pytest.fail("chromium and chromium-driver are not installed: ./dev test installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1500")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _until(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _text(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def _attribute(driver: Any, selector: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name) or "")


def _pids(driver: Any, function: str) -> list[int]:
    from selenium.webdriver.common.by import By

    row = driver.find_element(By.CSS_SELECTOR, f'tr.pool[data-function="{function}"]')
    return [int(chip.text) for chip in row.find_elements(By.CSS_SELECTOR, ".pid")]


def test_the_dashboard_shows_the_app_its_containers_and_a_chart_that_moves_after_a_map(
    dashboard: Dashboard, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    # Given the deployed app, When the printed address is opened in Chromium
    browser.get(f"{dashboard.base}/?token={dashboard.token}")
    # Then the token leaves the address, and the page shows the app and its functions
    assert "token" not in urlsplit(browser.current_url).query
    _until(browser, lambda d: "test-dashboard" in _text(d, "#pools"))
    table = _text(browser, "#pools")
    assert all(name in table for name in ("square", "checked", "hello"))
    # And a running container of square, by its pid, one of the engine's containers
    _until(browser, lambda d: _pids(d, "square"))
    running = {process.pid for process in dashboard.engine.containers()}
    assert set(_pids(browser, "square")) <= running
    # And a chart of the last minutes that has seen no input yet
    _until(browser, lambda d: int(_attribute(d, "#rate-chart", "data-points") or 0) >= 1)
    assert float(_attribute(browser, "#rate-chart", "data-max")) == 0
    points_before = _attribute(browser, "#rate-chart polyline.rate", "points")

    # When a map runs
    handle = warren.Function.from_name("test-dashboard", "square")
    assert list(handle.map(range(300))) == [x * x for x in range(300)]
    # Then the chart's throughput rises, live, without a reload
    _until(browser, lambda d: float(_attribute(d, "#rate-chart", "data-max") or 0) > 0)
    assert _attribute(browser, "#rate-chart polyline.rate", "points") != points_before
    taken = browser.find_element(By.CSS_SELECTOR, 'tr.pool[data-function="square"]')
    assert "300" in taken.text  # inputs taken

    # When a function fails on some inputs, and it is selected
    checker = warren.Function.from_name("test-dashboard", "checked")
    results = list(checker.map(range(60), return_exceptions=True))
    assert sum(isinstance(result, ValueError) for result in results) == 2
    browser.find_element(By.CSS_SELECTOR, 'tr.pool[data-function="checked"]').click()
    # Then its failures show, with their tracebacks (each attempt: the first was retried)
    _until(browser, lambda d: "ValueError: bad input" in _text(d, "#failures"))
    failures = browser.find_elements(By.CSS_SELECTOR, "#failures details.failure")
    assert len(failures) == 4  # 0 and 50, each tried twice
    assert "retried" in _text(browser, "#failures")
    traceback = failures[0].find_element(By.TAG_NAME, "pre").get_attribute("textContent")
    assert "raise ValueError" in traceback and "Traceback" in traceback

    # And the log of square shows what it printed
    browser.find_element(By.CSS_SELECTOR, 'tr.pool[data-function="square"]').click()
    _until(browser, lambda d: "squaring 299" in _text(d, "#log"), timeout=30)
    assert "all functions" not in _text(browser, "#chart-subject")
    # And the dead-letter panel says what it shows
    assert _text(browser, "#dead-letters")

    png = browser.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    target = os.environ.get("DASHBOARD_SCREENSHOT")
    if target:
        _keep_screenshot(
            browser, checker, Path(target) if Path(target).is_absolute() else REPO / target
        )


def _keep_screenshot(browser: Any, checker: Any, path: Path) -> None:
    """The page as the README shows it: ``checked`` selected after a few rounds of work,
    a failure opened."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, 'tr.pool[data-function="checked"]').click()
    for size in (40, 80, 20, 60):
        list(checker.map(range(1, size), kwargs={"delay": 0.05}, return_exceptions=True))
        time.sleep(3)
    _until(browser, lambda d: "checking" in _text(d, "#log"))
    browser.find_element(By.CSS_SELECTOR, "#failures details.failure summary").click()
    time.sleep(POLL_SETTLE)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, int(height) + 16)
    time.sleep(POLL_SETTLE)
    path.write_bytes(browser.get_screenshot_as_png())
