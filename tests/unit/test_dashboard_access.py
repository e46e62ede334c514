"""The dashboard's token: bearer or cookie, the cookie set from ``?token=`` once, and
where a made token is kept."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from warren_engine.daemon.dashboard.access import (
    TOKEN_FILE,
    DashboardAccess,
    authorized,
    cookie_value,
    refused,
)

TOKEN = "a-token-of-enough-length-0123456789"


def site(access: DashboardAccess) -> web.Application:
    """A page and a data endpoint guarded as the dashboard guards them."""

    async def page(request: web.Request) -> web.StreamResponse:
        login = access.login(request)
        if login is not None:
            return login
        if not access.allows(request):
            return refused(request)
        return web.Response(text="the page")

    async def data(request: web.Request) -> web.StreamResponse:
        if not access.allows(request):
            return refused(request)
        return web.json_response({"apps": []})

    application = web.Application()
    application.router.add_get("/", page)
    application.router.add_get("/_dashboard/api/overview", data)
    return application


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(site(DashboardAccess(TOKEN)))) as client:
        yield client


async def test_without_the_token_the_page_and_the_data_answer_401(
    client: TestClient[web.Request, web.Application],
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        page = await client.get("/", headers=headers)
        assert page.status == 401 and page.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in await page.text()
        data = await client.get("/_dashboard/api/overview", headers=headers)
        assert data.status == 401
        assert await data.json() == {"error": "the dashboard's token is needed"}
    assert (await client.get("/?token=wrong", allow_redirects=False)).status == 401


async def test_a_bearer_token_is_accepted_in_any_case_of_the_scheme(
    client: TestClient[web.Request, web.Application],
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        reply = await client.get(
            "/_dashboard/api/overview", headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert reply.status == 200


async def test_the_token_in_the_address_sets_a_strict_cookie_and_is_taken_out_of_it(
    client: TestClient[web.Request, web.Application],
) -> None:
    # When the page is opened with the token (and another parameter)
    reply = await client.get(f"/?view=all&token={TOKEN}", allow_redirects=False)
    # Then it redirects to the same address without the token, setting the cookie
    assert reply.status == 303
    assert reply.headers["Location"] == "/?view=all"
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie and cookie_value(TOKEN) in cookie
    # And the cookie (the client keeps it) opens the page and the data
    assert (await client.get("/?view=all")).status == 200
    assert (await client.get("/_dashboard/api/overview")).status == 200


async def test_a_cookie_made_for_another_token_or_another_port_is_refused() -> None:
    async with TestClient(TestServer(site(DashboardAccess(TOKEN)))) as client:
        port = client.port
        client.session.cookie_jar.update_cookies(
            {f"warren_dashboard_{port}": cookie_value("x" * 20)}
        )
        assert (await client.get("/")).status == 401
        client.session.cookie_jar.update_cookies({"warren_dashboard_1": cookie_value(TOKEN)})
        assert (await client.get("/")).status == 401
        client.session.cookie_jar.update_cookies({f"warren_dashboard_{port}": cookie_value(TOKEN)})
        assert (await client.get("/")).status == 200


def test_authorized_is_the_one_check_for_any_route_that_shares_the_token() -> None:
    from aiohttp.test_utils import make_mocked_request

    good = make_mocked_request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    bad = make_mocked_request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert authorized(good, TOKEN) and not authorized(bad, TOKEN)


def test_a_made_token_is_kept_for_this_user_only_and_the_same_after_a_restart(
    tmp_path: Path,
) -> None:
    first = DashboardAccess.for_engine(None, tmp_path / "state")
    assert first is not None and len(first.token) >= 32
    kept = tmp_path / "state" / TOKEN_FILE
    assert first.kept_in == kept
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    again = DashboardAccess.for_engine(None, tmp_path / "state")
    assert again is not None and again.token == first.token
    assert first.token not in repr(first)


def test_a_configured_token_wins_and_an_engine_of_one_run_has_none_unless_configured(
    tmp_path: Path,
) -> None:
    configured = DashboardAccess.for_engine(TOKEN, tmp_path)
    assert configured is not None and configured.token == TOKEN and configured.kept_in is None
    assert not (tmp_path / TOKEN_FILE).exists()
    assert DashboardAccess.for_engine(None, None) is None
    assert DashboardAccess.for_engine(TOKEN, None) is not None


def test_an_unusable_kept_token_is_replaced(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text("short\n")
    access = DashboardAccess.for_engine(None, tmp_path)
    assert access is not None and access.token != "short"
    assert (tmp_path / TOKEN_FILE).read_text().strip() == access.token
