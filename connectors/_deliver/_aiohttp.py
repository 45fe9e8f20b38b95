"""aiohttp under the httpx transport: its session, and its errors as the httpx exceptions httpcore raises.

Imported only when a request needs it (``AiohttpTransport`` sends every plain request on its own HTTP/1.1
connections, logins included): importing aiohttp costs ~0.1 s of CPU (its connector builds two TLS contexts
at import), which a run that never needs it no longer pays.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

_CHUNK = 64 * 1024

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


class AiohttpSession:
    """One ``aiohttp.ClientSession``, made inside the event loop that runs it: no cookies kept, no automatic
    decompression, redirects or headers (httpx does those)."""

    def __init__(self, *, limit: int, keepalive: float, ssl_context: ssl.SSLContext | bool) -> None:
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=keepalive, ssl=ssl_context)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            raise_for_status=False,
        )
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    @property
    def closed(self) -> bool:
        return self._session.closed

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

    async def send(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        timeout: Mapping[str, Any],
        request: httpx.Request | None,
        sni: str | None,
    ) -> httpx.Response:
        stream: httpx.AsyncByteStream
        try:
            response = await self._session.request(
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

    async def close(self) -> None:
        await self._session.close()
