"""The server's gatekeeping middlewares: who may ask, and what a path may name.

:func:`make_auth` lets in only requests holding a token that opens the server's
workspace (``Authorization: Bearer``, the ``runstream_token`` cookie, or ``?token=``
which sets the cookie); :func:`check_path_ids` refuses (400) a run id or experiment
name that is not a plain name before any handler builds a key or a path from it;
:func:`refuse_cross_site` refuses (403) a state-changing request sent from another
origin (a form or script of another site, or another port of this host, riding on the
viewer's cookie);
:func:`security_headers` gives every response ``nosniff`` and a Content-Security-Policy
(the pages', unless the handler set its own, as run files do).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from runstream.consumer.settings import scoped_tokens
from runstream.keys import check_identifier, check_run_id

__all__ = [
    "TOKEN_COOKIE",
    "Handler",
    "Middleware",
    "check_path_ids",
    "make_auth",
    "refuse_cross_site",
    "security_headers",
]

TOKEN_COOKIE = "runstream_token"  # noqa: S105  # the cookie's name, not a secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
    "Referrer-Policy": "same-origin",  # a page URL may hold ?token=: it never leaves the origin
}


@web.middleware
async def check_path_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ids and experiment names in a path or query are refused (400) before any handler
    builds a key or a path from them: aiohttp decodes ``%2F`` inside ``{run_id}``."""
    try:
        if "run_id" in request.match_info:
            check_run_id(request.match_info["run_id"])
        if "experiment" in request.match_info:
            check_identifier("experiment", request.match_info["experiment"])
        if "experiment" in request.query:
            check_identifier("experiment", request.query["experiment"])
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    return await handler(request)


@web.middleware
async def refuse_cross_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request that changes state (any method but GET, HEAD, OPTIONS) is refused (403) when
    it comes from another origin, by its ``Origin`` (or, without one, its ``Referer``), and
    when the token cookie is all it carries and it says nothing of where it comes from.

    A request with an ``Authorization`` header passes: a cross-site form cannot set one,
    and a cross-site script only after a CORS preflight, which this server never grants.
    So do requests with neither header nor cookie: the SDK, curl, scripts, which a browser
    cannot be made to send on a victim's behalf without the cookie.
    """
    if request.method not in _SAFE_METHODS and "Authorization" not in request.headers:
        source = request.headers.get("Origin", request.headers.get("Referer"))
        if source is None:
            if TOKEN_COOKIE in request.cookies:
                raise web.HTTPForbidden(reason="a request with only the token cookie must come with its Origin")
        elif urlsplit(source).netloc.lower() != request.host.lower():
            raise web.HTTPForbidden(reason=f"a {request.method} from another origin ({source[:80]!r}) is refused")
    return await handler(request)


def _token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


def _matches(given: str, tokens: frozenset[bytes]) -> bool:
    """Whether ``given`` is one of ``tokens``, compared in constant time as UTF-8 bytes:
    ``compare_digest`` raises TypeError on a str that is not ASCII (a 500, before)."""
    raw = given.encode("utf-8", "surrogateescape")
    return any(hmac.compare_digest(raw, token) for token in tokens)


def make_auth(tokens: frozenset[str], workspace: str, public: frozenset[str] = frozenset()) -> Middleware:
    """The middleware that lets in requests holding a token that opens ``workspace``.

    ``tokens`` are entries as :func:`~.settings.parse_token` reads them.  With none,
    everything is served.  A token scoped to another workspace gets 403, any other
    token (or none) 401.  The paths in ``public`` (the probes, which reveal nothing)
    need none.
    """
    opening, scoped_elsewhere = scoped_tokens(tokens, workspace)
    here, elsewhere = frozenset(t.encode() for t in opening), frozenset(t.encode() for t in scoped_elsewhere)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        """With tokens configured, nothing is served without one that opens this workspace."""
        given = _token_of(request)
        if request.path in public:
            return await handler(request)
        if not tokens or (given and _matches(given, here)):
            response = await handler(request)
            if tokens and request.query.get("token") and not response.prepared:
                # Strict: no other site's page, link or form makes the browser send it.
                response.set_cookie(TOKEN_COOKIE, given or "", httponly=True, samesite="Strict", secure=request.secure)
            return response
        if given and _matches(given, elsewhere):
            raise web.HTTPForbidden(reason="this token is scoped to another workspace")
        raise web.HTTPUnauthorized(reason="a bearer token is needed", headers={"WWW-Authenticate": "Bearer"})

    return auth


def security_headers(page_csp: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The ``on_response_prepare`` hook that gives every response ``nosniff``, no framing, a
    same-origin referrer policy, and ``page_csp`` unless its handler set a policy of its own."""
    headers = {**_SECURITY_HEADERS, "Content-Security-Policy": page_csp}

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in headers.items():
            response.headers.setdefault(name, value)

    return add_headers
