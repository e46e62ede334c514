"""Who may read the dashboard: whoever has its token.

The dashboard shows what functions printed and raised, which may carry data, so it is
never open. The token is ``WARREN_DASHBOARD_TOKEN``, or, when that is unset, one the
daemon makes on its first start (``secrets.token_urlsafe``) and keeps in its state
directory (``dashboard-token``, mode 0600), so that a bookmarked dashboard survives a
restart as the HTTP port does. The daemon prints the dashboard's URL with the token on
its stderr when it starts, and logs it nowhere else.

A request shows the token as ``Authorization: Bearer <token>``, or, from a browser, as a
cookie: opening ``/?token=<token>`` once sets an HttpOnly, SameSite=Strict cookie and
redirects to the same address without the token, so it leaves the address bar and the
history. The cookie holds a value derived from the token (an HMAC), not the token. Every
comparison is :func:`hmac.compare_digest`. :func:`authorized` is the one check, for any
route of the gateway that shares the token (``/metrics``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import structlog
from aiohttp import web
from warren.config import MIN_TOKEN_LENGTH

log = structlog.get_logger(__name__)

TOKEN_FILE = "dashboard-token"  # in the state directory
TOKEN_PARAMETER = "token"
COOKIE = "warren_dashboard"
_COOKIE_PURPOSE = b"warren dashboard cookie v1"
_BEARER = "bearer "


def cookie_value(token: str) -> str:
    """What the cookie holds for ``token``: a value derived from it, not the token."""
    return hmac.new(token.encode(), _COOKIE_PURPOSE, hashlib.sha256).hexdigest()


def cookie_name(request: web.Request) -> str:
    """Cookies are kept per host, not per port: each engine on a host has its own."""
    port = request.url.port
    return f"{COOKIE}_{port}" if port else COOKIE


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def authorized(request: web.Request, token: str) -> bool:
    """Whether ``request`` shows ``token``: as a bearer token, or as the dashboard's cookie."""
    header = request.headers.get("Authorization", "")
    if header[: len(_BEARER)].lower() == _BEARER and _same(header[len(_BEARER) :].strip(), token):
        return True
    cookie = request.cookies.get(cookie_name(request))
    return cookie is not None and _same(cookie, cookie_value(token))


class DashboardAccess:
    """The dashboard's token, and the check of a request against it."""

    def __init__(self, token: str, *, kept_in: Path | None = None) -> None:
        self.token = token
        self.kept_in = kept_in  # the file it was made and kept in, if not configured

    def __repr__(self) -> str:
        return f"DashboardAccess(kept_in={self.kept_in!r})"  # never the token

    @classmethod
    def for_engine(cls, configured: str | None, state_dir: Path | None) -> DashboardAccess | None:
        """The configured token, else the one kept in ``state_dir`` (made on first use);
        None when there is neither: an engine of one ``app.run()`` has no state directory
        of its own to keep a token in, and no dashboard unless one is configured."""
        if configured:
            return cls(configured)
        if state_dir is None:
            return None
        path = state_dir / TOKEN_FILE
        return cls(_kept_token(path), kept_in=path)

    def allows(self, request: web.Request) -> bool:
        return authorized(request, self.token)

    def login(self, request: web.Request) -> web.Response | None:
        """For a request carrying ``?token=``: a redirect to the same address without it,
        setting the cookie, or a 401 if the token is wrong. None for any other request."""
        given = request.query.get(TOKEN_PARAMETER)
        if given is None:
            return None
        if not _same(given, self.token):
            return refused(request)
        query = request.url.query.copy()
        query.popall(TOKEN_PARAMETER)
        target = str(request.rel_url.with_query(query))
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(
            cookie_name(request),
            cookie_value(self.token),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response


def refused(request: web.Request) -> web.Response:
    """The 401 a request without the token gets (JSON under the API, a short page else)."""
    headers = {"WWW-Authenticate": 'Bearer realm="warren"'}
    if request.path.startswith("/_dashboard/api/"):
        body = {"error": "the dashboard's token is needed"}
        return web.json_response(body, status=401, headers=headers)
    text = (
        "<!doctype html><title>Warren</title><p>This dashboard needs its token: open the "
        "address the engine printed when it started (<code>dashboard: ...?token=...</code>), "
        "or send <code>Authorization: Bearer &lt;token&gt;</code>.</p>"
    )
    return web.Response(status=401, text=text, content_type="text/html", headers=headers)


def _kept_token(path: Path) -> str:
    """The token kept at ``path``, made (and kept, readable by this user only) if none is."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        kept = path.read_text().strip()
        if len(kept) >= MIN_TOKEN_LENGTH:
            return kept
    token = secrets.token_urlsafe(32)
    staged = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(token + "\n")
        os.replace(staged, path)
    except OSError as exc:  # the token still works until the engine stops
        log.warning("dashboard_token_not_kept", path=str(path), reason=str(exc))
    return token
