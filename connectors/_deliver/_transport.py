"""An httpx transport over aiohttp: httpx stays the client (auth flows, redirects off, timeouts, the
``transport=`` option), aiohttp's connection pool and C HTTP/1.1 parser carry the bytes.

Measured on the delivery benchmark, httpx's default transport (httpcore, h11: pure Python, headers and body in
two writes) costs ~0.8 ms of CPU a request on the 2-core machine; this one ~0.45 ms, of which aiohttp is ~0.25.
The delivery's direct path (``Sender``, ``send_bytes``) goes further: its plain requests take the transport's
own HTTP/1.1 connections (``_http11.py``, httptools' parser), a quarter of aiohttp's CPU a request.
Every aiohttp error becomes the httpx exception httpcore would raise for the same failure, so callers catch
``httpx.TransportError`` and ``httpx.TimeoutException`` alike whatever carries the request. Responses are
streamed: ``client.stream()`` and ``Response.aiter_bytes()`` read the body as it arrives, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

from ._auth import ShipmapAuth
from ._http11 import Http11Pool

_CHUNK = 64 * 1024
_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own defaults

# Most specific first: aiohttp's timeout errors are also OSErrors and asyncio.TimeoutErrors.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a malformed status line or header
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.NetworkError),
    (aiohttp.ClientConnectionError, httpx.NetworkError),
    (aiohttp.ClientError, httpx.TransportError),
    (TimeoutError, httpx.PoolTimeout),  # waiting for a free connection of the pool
)


def _as_httpx(
    error: aiohttp.ClientError | TimeoutError, request: httpx.Request | None
) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure (raise it ``from error``). A plain function, not a context
    manager: the send path catches inline, which costs nothing when nothing fails."""
    for theirs, ours in _ERRORS:
        if isinstance(error, theirs):
            return ours(str(error) or type(error).__name__, request=request)
    return httpx.TransportError(str(error), request=request)  # pragma: no cover - the last rows match all


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request | None) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _as_httpx(error, self._request) from error

    async def aclose(self) -> None:
        # A body read to its end hands the connection back to the pool; one left half-read closes it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport(limits=...))``: HTTP/1.1 over aiohttp's pool.

    httpx keeps cookies, redirects, auth and content decoding: aiohttp gets a cookie jar that stores nothing,
    no automatic decompression and no redirects. Timeouts come from each request (httpx's ``timeout``
    extension): ``connect`` bounds connecting, ``pool`` the wait for a free connection, ``read`` every read.
    aiohttp has no write timeout; a stalled write is bounded by the caller's overall deadline.
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
        self._session: aiohttp.ClientSession | None = None
        self._http11: Http11Pool | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _context(self) -> ssl.SSLContext:
        """The TLS settings of both pools, made once (loading the CA bundle costs ~60 ms)."""
        if self._ssl_context is None:
            if isinstance(self._ssl, ssl.SSLContext):
                self._ssl_context = self._ssl
            else:
                self._ssl_context = httpx.create_ssl_context()
                if not self._ssl:
                    self._ssl_context.check_hostname = False
                    self._ssl_context.verify_mode = ssl.CERT_NONE
        return self._ssl_context

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that will run it.
        ssl_context: ssl.SSLContext | bool = self._context() if self._ssl is not False else False
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            ssl=ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            raise_for_status=False,
        )

    def _timeout(self, given: Mapping[str, Any]) -> aiohttp.ClientTimeout:
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            total_connect = None if connect is None or pool is None else connect + pool
            timeout = aiohttp.ClientTimeout(
                total=None, connect=total_connect, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body: bytes | AsyncIterator[bytes] | None
        headers = CIMultiDict(request.headers.multi_items())
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            body = _chunks(request)
            headers.popall("Transfer-Encoding", None)  # aiohttp chunks a body of unknown length itself
        timeout = request.extensions.get("timeout", {})
        sni = request.extensions.get("sni_hostname")
        return await self._send(request.method, str(request.url), headers, body, timeout, request, sni)

    async def send_bytes(
        self, method: str, url: str, headers: CIMultiDict[str], content: bytes, timeout: Mapping[str, Any]
    ) -> httpx.Response:
        """A request that is only bytes, without an httpx.Request: what ``Sender`` sends most requests with.
        ``headers`` are final but for Host and Content-Length. It goes on this transport's own HTTP/1.1
        connections (``_http11``: a quarter of aiohttp's CPU a request) when it is plain enough for them;
        anything else, on aiohttp."""
        pool = self._http11
        if pool is None or pool.loop is not asyncio.get_running_loop():
            limits = self._limits
            pool = self._http11 = Http11Pool(
                max_connections=limits.max_connections,
                keepalive_expiry=limits.keepalive_expiry,
                ssl_context=self._context,
            )
        prepared = pool.request_head(method, url, headers, content)
        if prepared is not None:
            return await pool.send(*prepared, content, timeout)
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
            session = self._session = self._open()
        stream: httpx.AsyncByteStream
        try:
            response = await session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout(timeout),
                server_hostname=sni,
            )
            if response.content.is_eof():
                # The whole body came with the headers (aiohttp holds it already): hand it over as read.
                stream = httpx.ByteStream(await response.read())
            else:
                stream = _ResponseStream(response, request)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _as_httpx(error, request) from error
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=stream,
            request=request,
            extensions=extensions,
        )

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
    login that is due, any other transport or auth. A 401 on the direct path, for a scheme that logs in
    (``retry_unauthorized``), forgets that token and goes through the auth flow, which logs in once for all
    the requests that saw it and sends again, as it does for a 401 of its own.
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

    async def send(self, method: str, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        direct = self._direct
        ready = self._auth.ready_headers() if direct is not None else None
        if direct is not None and ready is not None:
            auth_headers, generation = ready
            merged = self._headers.copy()
            merged.update(headers)
            merged.update(auth_headers)
            response = await direct.send_bytes(method, url, merged, content, self._timeout)
            if response.status_code != 401 or not self._auth.retry_unauthorized:
                return response
            await response.aclose()
            self._auth.unauthorized(generation, URL(url, encoded=True).path)
        request = self.client.build_request(method, url, content=content, headers=headers)
        return await self.client.send(request, stream=True)
