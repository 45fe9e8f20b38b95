"""An httpx transport on the delivery's own HTTP/1.1 connections, with aiohttp for the rest: httpx stays the
client (auth flows, redirects off, timeouts, the ``transport=`` option).

Measured on the delivery benchmark, httpx's default transport (httpcore, h11: pure Python, headers and body in
two writes) costs ~0.8 ms of CPU a request on the 2-core machine; aiohttp's pool and C parser ~0.45 ms, of
which aiohttp is ~0.25; the transport's own connections (``_http11.py``, httptools' parser) a quarter of
that. So every plain request takes those connections: the delivery's direct path (``Sender``, ``send_bytes``)
and any plain request httpx hands over (the Fenix login). Anything else (a streamed body, HEAD, a GET, an
SNI override, headers that are not plain) goes on aiohttp, imported on its first use (``_aiohttp.py``).
Every failure is the httpx exception httpcore would raise for the same failure, so callers catch
``httpx.TransportError`` and ``httpx.TimeoutException`` alike whatever carries the request. Responses are
streamed: ``client.stream()`` and ``Response.aiter_bytes()`` read the body as it arrives, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import urlsplit

import httpx
from multidict import CIMultiDict

from ._auth import ShipmapAuth
from ._http11 import Http11Pool

if TYPE_CHECKING:
    from ._aiohttp import AiohttpSession

_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own defaults


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport(limits=...))``: HTTP/1.1 on the transport's own
    connections (``_http11``) when a request is plain, else over aiohttp's pool.

    httpx keeps cookies, redirects, auth and content decoding: aiohttp gets a cookie jar that stores nothing,
    no automatic decompression and no redirects. Timeouts come from each request (httpx's ``timeout``
    extension): ``connect`` bounds connecting, ``pool`` the wait for a free connection, ``read`` every read.
    Neither pool has a write timeout; a stalled write is bounded by the caller's overall deadline.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._limits = limits
        self._ssl = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._session: AiohttpSession | None = None
        self._http11: Http11Pool | None = None

    def _context(self) -> ssl.SSLContext:
        """The TLS settings of both pools, made once, on the first https connection (loading the CA bundle
        costs ~60 ms; a run on http:// never pays it)."""
        if self._ssl_context is None:
            if isinstance(self._ssl, ssl.SSLContext):
                self._ssl_context = self._ssl
            else:
                self._ssl_context = httpx.create_ssl_context()
                if not self._ssl:
                    self._ssl_context.check_hostname = False
                    self._ssl_context.verify_mode = ssl.CERT_NONE
        return self._ssl_context

    def _pool(self) -> Http11Pool:
        pool = self._http11
        if pool is None or pool.loop is not asyncio.get_running_loop():
            limits = self._limits
            pool = self._http11 = Http11Pool(
                max_connections=limits.max_connections,
                keepalive_expiry=limits.keepalive_expiry,
                ssl_context=self._context,
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            content = request.content
        except httpx.RequestNotRead:
            content = None
        if content is not None and "sni_hostname" not in request.extensions:
            pool = self._pool()
            prepared = pool.request_head_of(request.method, str(request.url), request.headers.multi_items(),
                                            content)  # fmt: skip
            if prepared is not None:
                response = await pool.send(*prepared, content, timeout)
                response.request = request
                return response
        body: bytes | AsyncIterator[bytes] | None
        headers = CIMultiDict(request.headers.multi_items())
        if content is None:
            body = _chunks(request)
            headers.popall("Transfer-Encoding", None)  # aiohttp chunks a body of unknown length itself
        else:
            body = content or None
        sni = request.extensions.get("sni_hostname")
        return await self._send(request.method, str(request.url), headers, body, timeout, request, sni)

    @overload
    async def send_bytes(
        self, method: str, url: str, headers: CIMultiDict[str], content: bytes, timeout: Mapping[str, Any]
    ) -> httpx.Response: ...

    @overload
    async def send_bytes(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        content: bytes,
        timeout: Mapping[str, Any],
        *,
        success_as_status: bool,
    ) -> httpx.Response | int: ...

    async def send_bytes(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        content: bytes,
        timeout: Mapping[str, Any],
        *,
        success_as_status: bool = False,
    ) -> httpx.Response | int:
        """A request that is only bytes, without an httpx.Request: what ``Sender`` sends most requests with.
        ``headers`` are final but for Host and Content-Length. It goes on this transport's own HTTP/1.1
        connections (``_http11``: a quarter of aiohttp's CPU a request) when it is plain enough for them;
        anything else, on aiohttp. ``success_as_status``: see ``Http11Pool.send``."""
        pool = self._pool()
        prepared = pool.request_head(method, url, headers, content)
        if prepared is not None:
            return await pool.send(*prepared, content, timeout, success_as_status=success_as_status)
        return await self._send(method, url, headers, content or None, timeout, None, None)

    async def _send(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        timeout: Mapping[str, Any],
        request: httpx.Request | None,
        sni: str | None,
    ) -> httpx.Response:
        session = self._session
        if session is None or session.closed:
            from ._aiohttp import AiohttpSession  # ~0.1 s of imports: only for what the direct path refuses

            ssl_context: ssl.SSLContext | bool = self._context() if self._ssl is not False else False
            limits = self._limits
            session = self._session = AiohttpSession(
                limit=limits.max_connections or 0,
                keepalive=limits.keepalive_expiry or 5.0,
                ssl_context=ssl_context,
            )
        return await session.send(method, url, headers, body, timeout, request, sni)

    async def aclose(self) -> None:
        pool, self._http11 = self._http11, None
        if pool is not None:
            pool.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        yield chunk


class Sender:
    """Sends the requests of one connection: ``await sender.send(...)`` is
    ``client.send(client.build_request(...), stream=True)``, a streamed response to read and close.

    When the client runs on an AiohttpTransport (no proxy configured) and its auth scheme has its headers ready
    (``ShipmapAuth.ready_headers``: no login due), the request goes straight to the transport's connections
    (``AiohttpTransport.send_bytes``) with the very headers httpx would send (its defaults, the connection's,
    the request's, the scheme's): no httpx.Request, no auth flow generator, no cookie jar, ~0.2 ms of CPU a
    request less, and ~0.1 ms more on ``_http11``'s connections. Everything else goes through httpx: a
    login that is due, any other transport or auth. A 401 on the direct path, for a scheme that logs in,
    forgets that token and goes through the auth flow, which logs in once for all the requests that saw it
    and sends again, as it does for a 401 of its own; a scheme of fixed credentials reads them again, and
    the request goes again only if they changed.
    """

    def __init__(
        self, client: httpx.AsyncClient, auth: ShipmapAuth, transport: httpx.AsyncBaseTransport
    ) -> None:
        self.client = client
        self._auth = auth
        direct = isinstance(transport, AiohttpTransport) and not urllib.request.getproxies()
        self._direct = transport if direct and isinstance(transport, AiohttpTransport) else None
        self._headers = CIMultiDict(client.headers.multi_items())
        self._timeout = client.timeout.as_dict()

    @overload
    async def send(
        self, method: str, url: str, content: bytes, headers: Mapping[str, str]
    ) -> httpx.Response: ...

    @overload
    async def send(
        self, method: str, url: str, content: bytes, headers: Mapping[str, str], *, success_as_status: bool
    ) -> httpx.Response | int: ...

    async def send(
        self,
        method: str,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        success_as_status: bool = False,
    ) -> httpx.Response | int:
        """``success_as_status``: a 2xx answer that came whole on the direct path is only its status (what a
        delivery reads of it), without an httpx.Response."""
        direct = self._direct
        ready = self._auth.ready_headers() if direct is not None else None
        if direct is not None and ready is not None:
            auth_headers, generation = ready
            merged = self._headers.copy()
            merged.update(headers)
            merged.update(auth_headers)
            response = await direct.send_bytes(
                method, url, merged, content, self._timeout, success_as_status=success_as_status
            )
            if isinstance(response, int) or response.status_code != 401 or not self._auth.retry_unauthorized:
                return response
            self._auth.unauthorized(generation, urlsplit(url).path)
            again = self._auth.ready_headers()
            if again is not None and again[1] == generation:
                return response  # the same credentials again: nothing new to send it with, the 401 stands
            await response.aclose()
        request = self.client.build_request(method, url, content=content, headers=headers)
        return await self.client.send(request, stream=True)
