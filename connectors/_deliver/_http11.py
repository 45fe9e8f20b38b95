"""The delivery's direct path on the wire: HTTP/1.1 keep-alive connections on asyncio, parsed by httptools.

Measured against the sandbox in one process (``time.process_time``, 3,000 POSTs of the Shopify order payload at
concurrency 8): aiohttp's ``ClientSession`` spends ~250 us of CPU a request, most of it in Python around its C
parser (a ClientRequest, a ClientResponse, a task to write each body, a timer per read); a connection that
writes the request in one call and feeds the answer to llhttp (httptools, uvicorn's parser) spends ~60 us.
That is half of ``shipmap run``'s main process, and the delivery's speed is that process's CPU.

Only plain requests come here (``Http11Pool.request_head``): final ASCII headers, a body of bytes (empty for a
POST such as the Fenix login), ``http``/``https``, no proxy. Everything else (streamed bodies, HEAD, GET,
anything unusual) stays on aiohttp. The failures are the httpx exceptions httpcore raises for the same failure.

A connection goes back to the pool only after a whole answer, with keep-alive; any error, timeout,
cancellation or half-read body closes it, and so do bytes after a whole answer (an answer no request asked
for: the whole one stands), so an answer can never be read as another request's.
Bounded: the pool's connections (``max_connections``), every wait (pool, connect, read timeouts), an
answer's head (``_MAX_HEAD``), and the body: reading pauses while more than ``_HIGH_WATER`` bytes wait unread.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast, overload
from urllib.parse import urlsplit

import httptools
import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HIGH_WATER = 256 * 1024  # unread body bytes at which the socket stops being read
_MAX_HEAD = 64 * 1024  # an answer's status line and header lines, together: past it the answer is refused
_NOT_SENT_HERE = frozenset({"HEAD", "CONNECT"})  # their answers' framing differs: aiohttp handles them
_EMPTY_BODY_OK = frozenset({"POST", "PUT", "PATCH"})  # sent with Content-Length: 0, as httpx does (a login)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 5.6.2)
_SET_HERE = frozenset({"host", "content-length", "transfer-encoding", "expect", "upgrade", "te"})
_Key = tuple[str, str, int]
# The headers by which an answer's body ends (else it ends when the server closes), and their lengths.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_FRAMING_LENGTHS = frozenset(len(name) for name in _FRAMING)


def _plain(text: str) -> bool:
    """ASCII without the characters that would end a line of the request head."""
    return text.isascii() and "\r" not in text and "\n" not in text and "\0" not in text


class _Unasked(Exception):
    """Raised from the parser's callback to stop parsing bytes that answer no request."""


class _Connection(asyncio.Protocol):
    """One socket: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        # The read deadline: one timer that stays armed across waits and requests (moved on when it fires
        # early), not one per wait; it stops when it fires with nobody waiting.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._read_timeout: float | None = None  # the current wait's
        self._wait_started = 0.0
        self.error: Exception | None = None  # for good: a connection that failed is never used again
        self._asked = False  # a request is out and its answer not yet whole: an answer may begin
        self._start_answer()

    def _start_answer(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._framed = False  # a Content-Length or Transfer-Encoding header came
        self._head_bytes = 0
        self.chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._informational = False
        self._until_close = False  # a body without length or chunks ends when the server closes
        self._waiter: asyncio.Future[None] | None = None
        self._last_data = 0.0

    # --- asyncio ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports (uvicorn's default loop, in a program that embeds the
        # runtime) have asyncio.Transport's methods without being its subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as error:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.complete:
            return
        if self.headers_done and self._until_close and exc is None:
            self.complete = True  # the server's close ends such a body
            self._wake()
        elif self.headers_done:
            self._fail(
                httpx.RemoteProtocolError("the server closed the connection in the middle of the body")
            )
        elif exc is None or isinstance(exc, ConnectionResetError):
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))
        else:
            self._fail(httpx.ReadError(str(exc) or type(exc).__name__))

    def pause_writing(self) -> None:  # the body waits in the transport's buffer, bounded by its size
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools ------------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._asked:
            # More than one answer to a request, or the start of one: glued to the next request's answer,
            # its status would be taken for that one's. The answer already whole stands; the connection ends.
            self._fail(httpx.RemoteProtocolError("the server sent an answer no request asked for"))
            raise _Unasked  # stops this feed: nothing more of these bytes is parsed

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self._count_head(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) in _FRAMING_LENGTHS and name.lower() in _FRAMING:
            self._framed = True
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        # The read deadline only fires on silence: a server that keeps sending header lines is cut off here.
        self._head_bytes += size
        if self._head_bytes > _MAX_HEAD and self.error is None:
            self._fail(httpx.RemoteProtocolError(f"the answer's headers exceed {_MAX_HEAD // 1024} KiB"))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: informational, the answer follows
            self._informational = True
            return
        self.status = status
        self._until_close = not self._framed
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self.reason, self.headers, self._framed = b"", [], False
            return
        self._asked = False
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # --- the request's side -----------------------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, read_timeout: float | None) -> None:
        """Until the parser has news (headers, body, the end) or the connection fails. ReadTimeout when
        nothing arrives for ``read_timeout`` seconds of this wait."""
        if self.error is not None:
            raise self.error
        self._waiter = waiter = self._loop.create_future()
        self._read_timeout = read_timeout
        if read_timeout is not None:
            self._wait_started = now = self._loop.time()
            due = now + read_timeout
            if self._timer is None or self._timer_at > due:
                self._arm(due)
        try:
            await waiter
        finally:
            self._waiter = None
        if self.error is not None and not self.complete:  # bytes after a whole answer do not undo it
            raise self.error

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        read_timeout = self._read_timeout
        if self._waiter is None or self._waiter.done() or read_timeout is None:
            return  # nobody waits: the next wait arms it again
        # Silent since the wait began or since the last data, whichever is later.
        due = max(self._wait_started, self._last_data) + read_timeout
        if self._loop.time() >= due:
            self._fail(httpx.ReadTimeout(f"no data for {read_timeout:g} s"))
        else:
            self._arm(due)

    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self._start_answer()
        self._asked = True
        self._last_data = self._loop.time()
        self.transport.writelines((head, body))

    def take(self) -> bytes:
        """The body bytes parsed so far, handed over once."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        if self._buffered > _HIGH_WATER and self.transport is not None and not self.lost:
            self.transport.resume_reading()
        self._buffered = 0
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.open()

    def open(self) -> bool:
        transport = self.transport
        return self.error is None and not self.lost and transport is not None and not transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Body(httpx.AsyncByteStream):
    """An answer's body that had not all arrived with its headers: read as it comes, then the connection
    goes back to the pool; closed early, the connection is closed."""

    def __init__(
        self, pool: Http11Pool, key: _Key, connection: _Connection, read_timeout: float | None
    ) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        try:
            while True:
                data = connection.take()
                if data:
                    yield data
                if connection.complete:
                    break
                await connection.wait(self._read_timeout)
        except BaseException:
            self._release()
            raise
        self._release()

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._key, self._connection)


class Http11Pool:
    """Keep-alive connections per (scheme, host, port), at most ``max_connections`` open in all."""

    def __init__(
        self, *, max_connections: int | None, keepalive_expiry: float | None, ssl_context: Any
    ) -> None:
        self._max = max_connections or 100
        self._expiry = keepalive_expiry if keepalive_expiry is not None else 5.0
        self._ssl_context = ssl_context  # a callable giving the SSLContext: made on the first https use
        self._idle: dict[_Key, list[_Connection]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._all: set[_Connection] = set()  # open, idle or busy: closed by close()
        self._names: set[str] = set()  # header names found to be tokens this head may carry
        self._origins: dict[tuple[str, str], tuple[_Key, str]] = {}
        self.loop = asyncio.get_running_loop()  # connections belong to the loop that opened them

    def request_head(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes, *, host: str | None = None
    ) -> tuple[_Key, bytes] | None:
        """The connection key and the head of a request these connections can take: ASCII, a body (or an
        empty one for POST, PUT and PATCH: ``Content-Length: 0``, as httpx sends), http or https without
        credentials in the URL, header names that are tokens and values on one line, none of the headers
        this head sets itself. ``host``: the Host value the caller wants, if any (it must be the URL's). None
        for anything else: aiohttp takes it, and says what is wrong."""
        if (not content and method not in _EMPTY_BODY_OK) or method in _NOT_SENT_HERE:
            return None
        if not _plain(url) or " " in url:
            return None
        scheme, _, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        origin = self._origins.get((scheme, netloc))
        if origin is None:
            origin = self._origin(scheme, netloc)
            if origin is None:
                return None
        key, host_line = origin
        if host is not None and host_line != f"Host: {host}":
            return None
        names = self._names
        for name in headers:
            if name not in names:
                if not _TOKEN.fullmatch(name) or name.lower() in _SET_HERE or len(names) > 1000:
                    return None
                names.add(name)
        if not _plain("".join(headers.values())):
            return None
        target = (slash + path).partition("#")[0] or "/"  # a fragment is never sent
        lines = [f"{method} {target} HTTP/1.1", host_line]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        lines.append(f"Content-Length: {len(content)}\r\n\r\n")
        return key, "\r\n".join(lines).encode("ascii")

    def request_head_of(
        self, method: str, url: str, items: Iterable[tuple[str, str]], content: bytes
    ) -> tuple[_Key, bytes] | None:
        """``request_head`` for the headers of an ``httpx.Request`` (Host and Content-Length included, as
        httpx set them): None when a name comes twice or Content-Length is not the body's."""
        headers: dict[str, str] = {}
        seen: set[str] = set()
        host = None
        for name, value in items:
            lowered = name.lower()
            if lowered in seen:
                return None
            seen.add(lowered)
            if lowered == "host":
                host = value
            elif lowered == "content-length":
                if value != str(len(content)):
                    return None
            else:
                headers[name] = value
        if "content-length" not in seen and (content or method not in _EMPTY_BODY_OK):
            return None  # httpx frames such a body otherwise (chunked): aiohttp takes it
        return self.request_head(method, url, headers, content, host=host)

    def _origin(self, scheme: str, netloc: str) -> tuple[_Key, str] | None:
        """The pool key and the Host line of ``scheme://netloc``, remembered (a run sends to a few)."""
        if scheme not in _DEFAULT_PORTS or not netloc or "@" in netloc or "?" in netloc or "#" in netloc:
            return None
        try:
            parts = urlsplit(f"{scheme}://{netloc}/")
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            return None
        host = parts.hostname
        if not host:
            return None
        shown = f"[{host}]" if ":" in host else host
        line = f"Host: {shown}" if port == _DEFAULT_PORTS[scheme] else f"Host: {shown}:{port}"
        if len(self._origins) < 1000:
            self._origins[(scheme, netloc)] = ((scheme, host, port), line)
        return (scheme, host, port), line

    @overload
    async def send(
        self, key: _Key, head: bytes, content: bytes, timeout: Mapping[str, Any]
    ) -> httpx.Response: ...

    @overload
    async def send(
        self, key: _Key, head: bytes, content: bytes, timeout: Mapping[str, Any], *, success_as_status: bool
    ) -> httpx.Response | int: ...

    async def send(
        self,
        key: _Key,
        head: bytes,
        content: bytes,
        timeout: Mapping[str, Any],
        *,
        success_as_status: bool = False,
    ) -> httpx.Response | int:
        """Send a ``request_head`` and its body; the answer, its body streamed if it did not come whole.
        ``success_as_status``: a 2xx answer that came whole is only its status (a delivery reads nothing else
        of it: no httpx.Response is made; its connection is back in the pool)."""
        read_timeout = timeout.get("read")
        connection = await self._acquire(key, timeout)
        try:
            connection.send(head, content)
            while not connection.headers_done:
                await connection.wait(read_timeout)
        except BaseException:
            connection.close()
            self.release(key, connection)
            raise
        status, headers = connection.status, connection.headers  # before the connection serves another
        if success_as_status and connection.complete and 200 <= status < 300:
            connection.take()
            self.release(key, connection)
            return status
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if connection.reason:
            extensions["reason_phrase"] = connection.reason
        stream: httpx.AsyncByteStream
        if connection.complete:  # the usual answer: it came whole, with its headers
            stream = httpx.ByteStream(connection.take())
            self.release(key, connection)
        else:
            stream = _Body(self, key, connection, read_timeout)
        return httpx.Response(status, headers=headers, stream=stream, extensions=extensions)

    async def _acquire(self, key: _Key, timeout: Mapping[str, Any]) -> _Connection:
        loop = asyncio.get_running_loop()
        wait = timeout.get("pool")
        deadline = None if wait is None else loop.time() + wait
        while True:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if connection.open() and loop.time() - connection.idle_since < self._expiry:
                    return connection
                self._drop(connection)
            if self._open >= self._max:
                self._close_idle_elsewhere()
            if self._open < self._max:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout(f"no free connection within {wait:g} s") from None
            except BaseException:
                if waiter.done():
                    self._wake_one()  # woken, then cancelled: the room goes to the next in line
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            return await self._connect(loop, key, timeout.get("connect"))
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, key: _Key, timeout: float | None
    ) -> _Connection:
        scheme, host, port = key
        context: ssl.SSLContext | None = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g} s") from None
        except OSError as error:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error.strerror or error}") from None
        self._all.add(connection)
        return connection

    def release(self, key: _Key, connection: _Connection) -> None:
        """A connection whose request is over: kept for the next one if the answer was whole, else closed."""
        if connection.reusable():
            connection.idle_since = connection._loop.time()
            self._idle.setdefault(key, []).append(connection)
        else:
            self._drop(connection)
        self._wake_one()

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._all.discard(connection)
        self._open -= 1

    def _close_idle_elsewhere(self) -> None:
        for connections in self._idle.values():
            if connections:
                self._drop(connections.pop())
                return

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every connection, idle or not (a body nobody read to its end included)."""
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._idle.clear()
        self._open = 0
