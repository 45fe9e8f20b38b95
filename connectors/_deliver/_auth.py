"""Auth schemes as ``httpx.Auth`` subclasses, usable with any httpx client, sync or async.

``basic`` (Digital Genius), ``api_key`` (one header), ``bearer`` and ``fenix_session`` (a login that returns a
token and an identity, refreshed ahead of expiry and after a 401). Each scheme registers every credential it
holds, and every token it obtains, with the runtime's Redactor, and can show its headers masked for dry runs
without any network traffic (``preview_headers``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, ClassVar

import httpx

from .._errors import AuthError, ConfigError
from .._key_pairs import REFRESH
from .._redact import MASK, RedactingLogger, Redactor, get_logger

Clock = Callable[[], float]

FENIX_TOKEN_TTL = 4 * 3600.0  # the Fenix contract: authToken expires every 4 hours
FENIX_REFRESH_MARGIN = 300.0


def adapted_refresh_margin(token_ttl: float) -> float:
    """The refresh margin a session runs with when none is given: 5 minutes, at most half of ``token_ttl``."""
    return min(FENIX_REFRESH_MARGIN, token_ttl / 2)


API_KEY_HEADER = "x-api-key"  # where an api_key auth sends its key unless told otherwise


LOGIN_BODY_CAP = 64 * 1024  # a login answer (or a 401 before one) is a few hundred bytes; never read more


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """At most ``cap`` bytes of a streamed response body, then the response is closed: the rest is never
    read, and a connection left mid-body is closed, not kept checked out. The bytes become the response's
    content: httpx reads an auth flow's responses again (``aread``) before it sends the flow's next request,
    and this is all it finds."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    content = b"".join(chunks)[:cap]
    response._content = content  # what response.aread() returns from now on, instead of reading on
    await response.aclose()
    return content


def _read_capped_sync(response: httpx.Response, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    content = b"".join(chunks)[:cap]
    response._content = content
    response.close()
    return content


class ShipmapAuth(httpx.Auth):
    """An auth scheme that can also describe its headers, masked, without logging in."""

    scheme = "none"
    # A 401 that survives this scheme's own fresh login (or fresh read of its credentials) and retry is a
    # refusal of the credentials: the connection's breaker opens and deliveries wait, none is dead-lettered.
    # Every scheme of shipmap's says so; for a scheme written elsewhere a 401 stays final unless it says so.
    retry_unauthorized = False
    # What a delivery refused that way says (no value: a reason a reader acts on).
    refused_reason = "HTTP 401: the credentials are refused"

    def preview_headers(self) -> dict[str, str]:
        return {}

    def ready_headers(self) -> tuple[dict[str, str], int] | None:
        """The headers ``auth_flow`` would add to a request now, and the token generation they belong to,
        when adding them needs no I/O; None when the request must go through ``auth_flow`` (a login is due,
        or the scheme is not one of these). The delivery sends most requests with these, without building
        an httpx.Request (``_transport.Sender``)."""
        return None

    def unauthorized(self, generation: int, path: str) -> None:
        """A 401 answered a request sent outside ``auth_flow`` with the ``ready_headers`` of ``generation``.
        A scheme that logs in forgets that token (not a newer one), so that the next request logs in: once,
        for every request that saw it. Fixed credentials have nothing to forget."""

    def _mark_logs(self, runtime_name: str) -> None:
        """Mark what this scheme logs (logins, rotated credentials) with its runtime's name."""
        log = getattr(self, "_log", None)  # NoAuth, and a scheme written elsewhere, log nothing of shipmap's
        if isinstance(log, RedactingLogger):
            self._log = log.for_runtime(runtime_name)


Reread = Callable[[], Mapping[str, str]]  # the credentials as the config's references read them now


class _FixedHeaders(ShipmapAuth):
    """A scheme whose headers change only with its credentials: the flow and the delivery's direct path add
    the same dict. With ``reread`` (credentials written as references), a 401 reads them again, once per
    generation of headers: if they changed (rotated), the request goes again with the new ones. A 401 they
    do not answer (unchanged, or credentials that cannot be read again: written into the file, given in
    code) is a refusal (``retry_unauthorized``): it opens the breaker, and the deliveries wait ``pending``
    for the credentials to be fixed instead of each becoming a dead letter."""

    retry_unauthorized = True
    _headers: dict[str, str]
    _generation = 0
    _reread: Reread | None = None
    _public: ClassVar[frozenset[str]] = frozenset()  # credential keys whose values are not secrets (a prefix)
    _names: ClassVar[Mapping[str, str]] = {}  # the file's other spellings of a credential's key

    def _start(
        self, credentials: Mapping[str, str], reread: Reread | None, redactor: Redactor | None
    ) -> None:
        self._credentials = dict(credentials)
        self._reread = reread
        self._redactor = redactor if redactor is not None else Redactor()
        self._log = get_logger("auth", self._redactor)
        self._lock = threading.Lock()  # the sync and async flows, and serve's two threads, share the object
        self._use(self._credentials)

    def _use(self, credentials: Mapping[str, str]) -> None:
        headers = self._headers_for(credentials)
        for value in headers.values():  # the token of "Basic <token>" (the scheme's name stays readable)
            self._redactor.add(value.rsplit(" ", 1)[-1])
        for key, value in credentials.items():
            if key not in self._public:
                self._redactor.add(value)
        self._headers = headers

    def _headers_for(self, credentials: Mapping[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def _read_again(self, generation: int) -> None:
        """After a 401 to the headers of ``generation``: read the credentials again; new ones make a new
        generation. A reference that cannot be read is logged (naming it, never a value) and changes nothing."""
        if self._reread is None:
            return
        with self._lock:
            if generation != self._generation:  # another request already read them after the same 401
                return
            try:
                found = {self._names.get(key, key): value for key, value in self._reread().items()}
            except ValueError as error:
                self._log.warning(
                    "%s credentials refused (HTTP 401); cannot read them again: %s", self.scheme, error
                )
                return
            fresh = {**self._credentials, **found}
            if fresh == self._credentials:
                return
            self._use(fresh)
            self._credentials = fresh
            self._generation += 1
        self._log.warning(
            "%s credentials refused (HTTP 401) and changed since they were read (rotated): using the new ones",
            self.scheme,
        )

    def _rotated_after(self, response: httpx.Response, generation: int) -> bool:
        """After the answer to headers of ``generation``: whether to send once more, with new credentials
        (a 401, and they were rotated)."""
        if response.status_code != 401 or self._reread is None:
            return False
        self._read_again(generation)
        return self._generation != generation

    # httpx reads a response whole before the flow's next request: a 401 sent again is read up to a cap first.
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        generation = self._generation
        request.headers.update(self._headers)
        response = yield request
        if self._rotated_after(response, generation):
            _read_capped_sync(response, LOGIN_BODY_CAP)
            request.headers.update(self._headers)
            yield request

    auth_flow = sync_auth_flow

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        generation = self._generation
        request.headers.update(self._headers)
        response = yield request
        if self._rotated_after(response, generation):
            await read_capped(response, LOGIN_BODY_CAP)
            request.headers.update(self._headers)
            yield request

    def ready_headers(self) -> tuple[dict[str, str], int] | None:
        return self._headers, self._generation

    def unauthorized(self, generation: int, path: str) -> None:
        self._read_again(generation)


class NoAuth(_FixedHeaders):
    """No credentials (a connection to a local or already-authenticated endpoint)."""

    refused_reason = "HTTP 401: the endpoint wants credentials, and this connection sends none (auth: none)"

    def __init__(self) -> None:
        self._headers = {}


class BasicAuth(_FixedHeaders):
    """HTTP Basic: ``Authorization: Basic base64(username:password)``; for DG, the API key and secret."""

    scheme = "basic"
    _names: ClassVar[Mapping[str, str]] = {"key": "username", "secret": "password"}  # DG's names

    def __init__(
        self, username: str, password: str, *, redactor: Redactor | None = None, reread: Reread | None = None
    ) -> None:
        self._start({"username": username, "password": password}, reread, redactor)

    def _headers_for(self, credentials: Mapping[str, str]) -> dict[str, str]:
        pair = f"{credentials['username']}:{credentials['password']}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}

    def preview_headers(self) -> dict[str, str]:
        return {"Authorization": f"Basic {MASK}"}


class ApiKeyAuth(_FixedHeaders):
    """A key in one header, e.g. ``x-api-key: ...``, optionally with a prefix such as ``Token``."""

    scheme = "api_key"
    _public: ClassVar[frozenset[str]] = frozenset({"prefix"})

    def __init__(
        self,
        value: str,
        *,
        header: str = API_KEY_HEADER,
        prefix: str = "",
        redactor: Redactor | None = None,
        reread: Reread | None = None,
    ) -> None:
        self.header = header
        self._start({"api_key": value, "prefix": prefix}, reread, redactor)

    def _headers_for(self, credentials: Mapping[str, str]) -> dict[str, str]:
        value, prefix = credentials["api_key"], credentials["prefix"]
        return {self.header: f"{prefix} {value}" if prefix else value}

    def preview_headers(self) -> dict[str, str]:
        return {self.header: MASK}


class BearerAuth(_FixedHeaders):
    """``Authorization: Bearer <token>``."""

    scheme = "bearer"

    def __init__(self, token: str, *, redactor: Redactor | None = None, reread: Reread | None = None) -> None:
        self._start({"token": token}, reread, redactor)

    def _headers_for(self, credentials: Mapping[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {credentials['token']}"}

    def preview_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {MASK}"}


class FenixSessionAuth(ShipmapAuth):
    """The Fenix session: ``POST {base}/login`` with username, password and x-api-key headers returns
    ``authToken`` and ``x-identity``; every call then sends store_name, authToken, x-api-key and x-identity.

    The token is refreshed ``refresh_margin`` seconds before ``token_ttl`` runs out (left out: 5 minutes, at
    most half a short token's life; given: as given, below ``token_ttl``), and on a 401 the request
    is retried once after a fresh login. Logins are serialised (an asyncio.Lock per event loop for async
    clients, a threading.Lock for sync ones) and numbered: a request remembers the generation of the token it
    was sent with, and after a 401 logs in again only if no one else has since. So any number of requests
    failing with the same expired token cause exactly one login.
    """

    scheme = "fenix_session"
    retry_unauthorized = True
    refused_reason = "login succeeds but the API refuses the token: check store_name and x-api-key"

    def __init__(
        self,
        *,
        login_url: str,
        username: str,
        password: str,
        api_key: str,
        store_name: str,
        token_ttl: float = FENIX_TOKEN_TTL,
        refresh_margin: float | None = None,
        redactor: Redactor | None = None,
        clock: Clock = time.monotonic,
        refresh: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.login_url = login_url
        self._refresh = refresh  # reads the credentials again at each login (rotation); None: fixed
        self._username = username
        self._password = password
        self._api_key = api_key
        self.store_name = store_name
        self.token_ttl = token_ttl
        self.refresh_margin = FENIX_REFRESH_MARGIN
        self.use_refresh_margin(refresh_margin)
        self.redactor = redactor if redactor is not None else Redactor()
        for secret in (password, api_key):
            self.redactor.add(secret)
        self._clock = clock
        self._log = get_logger("auth", self.redactor)
        self._token: str | None = None
        self._identity: str | None = None
        self._headers: dict[str, str] = {}  # the session headers of the current token
        self._expires_at = 0.0
        self.generation = 0  # bumped by every successful login
        self.logins = 0
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self._async_lock_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def use_refresh_margin(self, refresh_margin: float | None) -> None:
        """Log in again ``refresh_margin`` seconds before the token runs out, from now on; None: the default,
        which adapts to a short token. The session goes on: a reload that changed only this logs in again
        when the new margin says so, not at once. A margin given is held to the config's rules: ConfigError
        (exit 2) below 0, or not below ``token_ttl`` (``REFRESH``, the rule ``AuthSettings`` holds too)."""
        if refresh_margin is None:  # the default adapts to a short token; a margin given is the caller's
            refresh_margin = adapted_refresh_margin(self.token_ttl)
        elif refresh_margin < 0:  # a file's durations cannot be; the schema holds AuthSettings' in code
            raise ConfigError(f"{type(self).__name__}: refresh_margin must be 0 or more")
        REFRESH.refuse(type(self).__name__, refresh_margin, self.token_ttl)
        self.refresh_margin = refresh_margin

    # --- shared, I/O-free steps -------------------------------------------------------------------------

    def _needs_login(self) -> bool:
        return self._token is None or self._clock() >= self._expires_at - self.refresh_margin

    def _login_request(self) -> httpx.Request:
        self._reread()
        headers = {"username": self._username, "password": self._password, "x-api-key": self._api_key}
        return httpx.Request("POST", self.login_url, headers=headers)

    def _reread(self) -> bool:
        """Read the credentials again (a rotated key or password takes effect at this login). True when
        they changed. A reference that cannot be read is an AuthError that names it, never a value."""
        if self._refresh is None:
            return False
        try:
            found = self._refresh()
        except ValueError as error:
            raise AuthError(f"cannot read the Fenix credentials again: {error}") from None
        before = (self._username, self._password, self._api_key, self.store_name)
        self._username = found.get("username", self._username)
        self._password = found.get("password", self._password)
        self._api_key = found.get("api_key", self._api_key)
        self.store_name = found.get("store_name", self.store_name)
        for secret in (self._password, self._api_key):
            self.redactor.add(secret)
        changed = before != (self._username, self._password, self._api_key, self.store_name)
        if changed and self.logins:
            self._log.warning("Fenix credentials changed since the last login (rotated): using the new ones")
        return changed

    def _refused_but_rotated(self, response: httpx.Response) -> bool:
        """A refused login re-reads the credentials once: worth a second login only if they changed."""
        return response.status_code in (401, 403) and self._refresh is not None and self._reread()

    def _accept_login(self, response: httpx.Response, content: bytes) -> None:
        status = response.status_code
        if status >= 400:
            retryable = status == 429 or status >= 500
            raise AuthError(f"Fenix login failed with HTTP {status}", status=status, retryable=retryable)
        try:
            body: Any = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested too deeply
            raise AuthError("Fenix login response is not JSON", status=status) from None
        token = body.get("authToken") if isinstance(body, dict) else None
        identity = body.get("x-identity") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not isinstance(identity, str) or not identity:
            raise AuthError("Fenix login response lacks authToken or x-identity", status=status)
        for name, value in (("authToken", token), ("x-identity", identity)):
            # Each goes out as a header: a line break or a non-ASCII character cannot (named, never shown).
            if not (value.isascii() and value.isprintable()):
                raise AuthError(
                    f"Fenix login response's {name} cannot be sent as a header: it is not printable ASCII",
                    status=status,
                )
        self.redactor.add(token, slot=(self, "authToken"))  # the newest few: an expired token unlocks nothing
        self.redactor.add(identity, slot=(self, "x-identity"))
        self._token, self._identity = token, identity
        self._headers = {
            "store_name": self.store_name,
            "authToken": token,
            "x-api-key": self._api_key,
            "x-identity": identity,
        }
        self._expires_at = self._clock() + self.token_ttl
        self.generation += 1
        self.logins += 1
        self._log.info("logged in to %s (token generation %d)", self.login_url, self.generation)

    def _apply(self, request: httpx.Request) -> int:
        """Put the session headers on ``request``; returns the token generation they belong to."""
        if self._token is None or self._identity is None:
            raise AuthError("Fenix session was invalidated while a request was starting", retryable=True)
        request.headers.update(self._headers)
        return self.generation

    def ready_headers(self) -> tuple[dict[str, str], int] | None:
        if self._needs_login():
            return None
        return self._headers, self.generation

    def invalidate(self) -> None:
        """Forget the token, so the next request logs in (e.g. after rotating credentials)."""
        self._token = None

    def unauthorized(self, generation: int, path: str) -> None:
        if generation == self.generation and self._token is not None:
            self._log.info("HTTP 401 from %s: logging in again", path)
            self._token = None

    def preview_headers(self) -> dict[str, str]:
        return {"store_name": self.store_name, "authToken": MASK, "x-api-key": MASK, "x-identity": MASK}

    # --- sync flow ----------------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        fresh = False
        if self._needs_login():
            with self._thread_lock:
                if self._needs_login():  # someone may have logged in while we waited
                    login = yield self._login_request()
                    content = _read_capped_sync(login, LOGIN_BODY_CAP)
                    if self._refused_but_rotated(login):
                        login = yield self._login_request()
                        content = _read_capped_sync(login, LOGIN_BODY_CAP)
                    self._accept_login(login, content)
                    fresh = True
        sent_with = self._apply(request)
        response = yield request
        if response.status_code != 401 or fresh:
            return  # a 401 to the token this very flow just got: another login would be refused alike
        _read_capped_sync(response, LOGIN_BODY_CAP)  # httpx reads it whole before the next request
        with self._thread_lock:
            if self.generation == sent_with:
                self._log.info("HTTP 401 from %s: logging in again", request.url.path)
                login = yield self._login_request()
                self._accept_login(login, _read_capped_sync(login, LOGIN_BODY_CAP))
        self._apply(request)
        yield request

    # --- async flow ---------------------------------------------------------------------------------------

    def _loop_lock(self) -> asyncio.Lock:
        # asyncio.Lock binds to the loop that first waits on it; a runtime may run several loops in turn.
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._async_lock_loop is None or self._async_lock_loop() is not loop:
            self._async_lock = asyncio.Lock()
            self._async_lock_loop = weakref.ref(loop)
        return self._async_lock

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        lock = self._loop_lock()
        fresh = False
        if self._needs_login():
            async with lock:
                if self._needs_login():
                    login = yield self._login_request()
                    content = await read_capped(login, LOGIN_BODY_CAP)
                    if self._refused_but_rotated(login):
                        login = yield self._login_request()
                        content = await read_capped(login, LOGIN_BODY_CAP)
                    self._accept_login(login, content)
                    fresh = True
        sent_with = self._apply(request)
        response = yield request
        if response.status_code != 401 or fresh:
            return  # a 401 to the token this very flow just got: another login would be refused alike
        await read_capped(response, LOGIN_BODY_CAP)  # httpx reads it whole before the next request
        async with lock:
            if self.generation == sent_with:
                self._log.info("HTTP 401 from %s: logging in again", request.url.path)
                login = yield self._login_request()
                self._accept_login(login, await read_capped(login, LOGIN_BODY_CAP))
        self._apply(request)
        yield request
