"""``kill -HUP`` that moves an endpoint while a delivery is on its way to the old one: its probe's request in
flight there when the reload lands, or its retry's backoff under way. Each time the delivery sends nothing
more to the old endpoint, is delivered to the new one once, nothing is dead-lettered, and the log says once
that the connection moved. (A delivery that waits at the open breaker is ``test_serve_reload.py``'s.)

The old endpoint is a real HTTP server on 127.0.0.1 that answers 503 and can hold one request open: the
reload, and the end of the run it asks for, land while that request is in flight, whatever the machine's
load."""

from __future__ import annotations

import signal
import socket
import socketserver
import threading
import time
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import FIXTURE_RETRY, ServeProcess, delivered_orders, post_order

FENIX = "  fenix:\n    api: fenix\n    base_url: ${SANDBOX_URL}\n"
REQUEST_CAP = 1024 * 1024  # bytes of one request the old endpoint reads at most
HOLD_DEADLINE_S = 30.0  # a held request is answered by then, released or not


class OldEndpoint:
    """Where a connection pointed before it moved: every request is answered ``503``, at once, or, the first
    one after ``hold()`` (whose request line holds its ``path``), once the test calls ``release()`` (its
    ``held`` is set when it arrives). ``requests``
    counts the requests it read, ``hung_up`` the answers after which the client closed the connection (it
    had read them whole). With ``retry_after`` its 503s say ``Retry-After``, and a Fenix login
    (``POST /login``) succeeds, so that the 503 reaches the delivery itself (a login's is the login's)."""

    def __init__(self, retry_after: int | None = None) -> None:
        self.requests = 0
        self.hung_up = 0
        self.held = threading.Event()
        self._release = threading.Event()
        self._armed: bytes | None = None  # what the request line of the request to hold holds
        self._lock = threading.Lock()
        endpoint = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                line = _read_request(self.request)
                if line is None:
                    return
                if retry_after is not None and line.startswith(b"POST /login "):
                    body = b'{"authToken": "old-endpoint-token", "x-identity": "old-endpoint-identity"}'
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
                    return
                with endpoint._lock:
                    endpoint.requests += 1
                    hold = endpoint._armed is not None and endpoint._armed in line
                    if hold:
                        endpoint._armed = None
                if hold:
                    endpoint.held.set()
                    endpoint._release.wait(HOLD_DEADLINE_S)
                said = b"" if retry_after is None else b"Retry-After: %d\r\n" % retry_after
                self.request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\n" + said
                    + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )  # fmt: skip
                if _hung_up(self.request):
                    with endpoint._lock:
                        endpoint.hung_up += 1

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def hold(self, path: str = "") -> None:
        with self._lock:
            self._armed = path.encode()

    def release(self) -> None:
        self._release.set()

    def __enter__(self) -> OldEndpoint:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def _hung_up(sock: socket.socket) -> bool:
    """Whether the client closed the connection (within ``HOLD_DEADLINE_S``), sending nothing more."""
    sock.settimeout(HOLD_DEADLINE_S)
    try:
        return sock.recv(1) == b""
    except OSError:
        return False


def _read_request(sock: socket.socket) -> bytes | None:
    """Read one request, its head and the body its Content-Length declares (at most ``REQUEST_CAP``); its
    request line, None when the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > REQUEST_CAP:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = min(int(value), REQUEST_CAP)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head.split(b"\r\n", 1)[0]


def _moving(serve: ServeProcess, old: str, breaker: str, retry: str | None = None) -> str:
    """Start ``serve`` with Fenix at ``old``, the ``delivery.breaker`` given and, given, its ``retry`` in
    place of the fixture's; return the config that moves Fenix back to the sandbox."""
    text = serve.config.read_text()
    assert FENIX in text and "delivery:\n" in text and FIXTURE_RETRY in text
    working = text.replace("delivery:\n", f"delivery:\n  breaker: {breaker}\n")
    if retry is not None:
        working = working.replace(FIXTURE_RETRY, f"  retry: {retry}\n")
    serve.config.write_text(working.replace(FENIX, FENIX.replace("${SANDBOX_URL}", old)))
    serve.start()
    return working


def _reload(serve: ServeProcess, config: str) -> None:
    serve.config.write_text(config)
    assert serve.process is not None
    serve.process.send_signal(signal.SIGHUP)
    serve.wait_until(
        lambda: any("reloaded " in line and line.rstrip().endswith("connections.fenix: base_url")
                    for line in serve.errors),
        timeout=30,
        what="the reload's log line",
    )  # fmt: skip


def test_a_probe_in_flight_to_the_old_endpoint_at_the_reload_fails_after_it_and_its_delivery_follows(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The reload lands while the half-open probe's request is held open by the old endpoint, and so does
    the end of the run that the reload asks for (it parks what waits). The probe fails after both: the
    delivery was parked as if the old endpoint were down ("unavailable for 0 s"), and the log never said that
    the connection had moved. Now it is parked as moved, said once, and the next run delivers it to the new
    endpoint; the old one gets no request after the probe, and no line says that the delivery waits for the
    breaker (it used to, just before the line that says it moved)."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    with OldEndpoint() as old:
        working = _moving(serve, old.url, "{failures: 2, cooldown: 1s, cooldown_cap: 1s, outage_wait: 10m}")
        try:
            with httpx.Client(timeout=10) as client:
                post_order(serve, client, 7_300_001, "moves7300001")
                serve.wait_until(
                    lambda: serve.said("connection fenix: circuit breaker open") > 0,
                    timeout=30,
                    what="fenix's breaker open at the old endpoint",
                )
                old.hold()  # the next request is the probe (a cooldown of 1 s: the hold is armed well before)
                assert old.held.wait(30), "no probe reached the old endpoint"
                sent_to_old = old.requests
                waiting = serve.said("; waiting for the circuit breaker of fenix")
                _reload(serve, working)
                # The reload's end of the run comes meanwhile: nothing else holds the delivery loop.
                time.sleep(0.5)
                old.release()
                serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7300001"], timeout=30,
                                 what="the order whose probe was in flight")  # fmt: skip
                assert (
                    serve.said("connection fenix moved by a reload while its circuit breaker was open") == 1
                ), serve.errors[-10:]
                assert serve.said("connection fenix unavailable for") == 0, serve.errors[-10:]
                # The probe's failure after the move waits for nothing: no line says it does.
                waits = serve.said("; waiting for the circuit breaker of fenix")
                assert waits == waiting, serve.errors[-10:]
                assert serve.said("connections.fenix: base_url changed: 1 pending delivery journaled for the"
                                    " old one go to the new one") == 1, serve.errors[-10:]  # fmt: skip
                post_order(serve, client, 7_300_002, "moves7300002")
                serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7300001", "7300002"], timeout=30,
                                 what="the next order")  # fmt: skip
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert old.requests == sent_to_old, "a request went to the old endpoint after the move"
    assert not [line for line in serve.errors if "dead letter" in line], serve.errors
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 2  # each once


def test_a_delivery_in_its_retry_backoff_at_the_reload_follows_the_move_at_once(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The old endpoint failed the delivery once, too few failures to open the breaker, and the delivery waits
    out a 20 s backoff when the reload lands. It used to sleep it out and retry the old endpoint (up to
    max_attempts, then a dead letter, 4 attempts being fewer than the breaker's 5 failures); now the backoff
    ends at the move, the delivery is parked as moved, said once, and delivered to the new endpoint within
    seconds; the old endpoint got its one request only."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    with OldEndpoint() as old:
        working = _moving(
            serve,
            old.url,
            "{failures: 5, cooldown: 1s, outage_wait: 10m}",
            retry="{max_attempts: 4, backoff_base: 20s, backoff_cap: 20s, jitter: none}",
        )
        try:
            with httpx.Client(timeout=10) as client:
                post_order(serve, client, 7_300_003, "moves7300003")
                serve.wait_until(lambda: serve.said("attempt 1 failed (") > 0, timeout=30,
                                 what="the first attempt's failure at the old endpoint")  # fmt: skip
                assert serve.said("retrying in 20.00s") == 1, serve.errors[-10:]
                moved_at = time.monotonic()
                _reload(serve, working)
                serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7300003"], timeout=15,
                                 what="the order that waited out its backoff")  # fmt: skip
                assert time.monotonic() - moved_at < 15  # not after the 20 s backoff
                assert (
                    serve.said("connection fenix moved by a reload while a delivery was retrying (") == 1
                ), serve.errors[-10:]
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert old.requests == 1, "the delivery retried the old endpoint after the move"
    assert not [line for line in serve.errors if "dead letter" in line], serve.errors
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 1


def test_a_last_attempt_in_flight_to_the_old_endpoint_at_the_reload_is_not_a_dead_letter(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The delivery's last attempt (of max_attempts) is held open by the old endpoint when the reload lands,
    and fails after it: the delivery was dead-lettered ("gave up after 2 attempts"), though it was never sent
    to the endpoint the connection moved to. Now it is parked as moved and delivered there, once."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    with OldEndpoint() as old:
        working = _moving(
            serve,
            old.url,
            "{failures: 5, cooldown: 1s, outage_wait: 10m}",
            retry="{max_attempts: 2, backoff_base: 1s, backoff_cap: 1s, jitter: none}",
        )
        try:
            with httpx.Client(timeout=10) as client:
                post_order(serve, client, 7_300_004, "moves7300004")
                serve.wait_until(lambda: serve.said("attempt 1 failed (") > 0, timeout=30,
                                 what="the first attempt's failure at the old endpoint")  # fmt: skip
                old.hold()  # the retry, a second after the first attempt: the last one max_attempts allows
                assert old.held.wait(30), "the retry did not reach the old endpoint"
                _reload(serve, working)
                time.sleep(0.5)  # the end of the run the reload asks for comes meanwhile
                old.release()
                serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7300004"], timeout=30,
                                 what="the order whose last attempt was in flight")  # fmt: skip
                assert (
                    serve.said("connection fenix moved by a reload while a delivery was retrying (") == 1
                ), serve.errors[-10:]
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert old.requests == 2, "a request went to the old endpoint after the move"
    assert not [line for line in serve.errors if "dead letter" in line], serve.errors
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 1


def test_a_delivery_held_by_a_retry_after_at_the_reload_follows_the_move_at_once(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The old endpoint answered one order 503 with ``Retry-After: 20``, which holds every request of the
    connection for 20 s; a second order, never sent, waits out that hold when the reload lands. It used to
    wait it out and then send once to the old endpoint (a 503 there, then parked as moved); now the hold ends
    at the move too: both orders are parked as moved at once, said once in the log, and delivered to the new
    endpoint within seconds, each once; the old endpoint got the first order's one request only."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    with OldEndpoint(retry_after=20) as old:
        working = _moving(
            serve,
            old.url,
            "{failures: 5, cooldown: 1s, outage_wait: 10m}",
            retry="{max_attempts: 4, backoff_base: 20s, backoff_cap: 20s, jitter: none, retry_after_cap: 30s}",
        )
        try:
            with httpx.Client(timeout=10) as client:
                post_order(serve, client, 7_300_005, "moves7300005")
                serve.wait_until(lambda: serve.said("attempt 1 failed (HTTP 503") > 0, timeout=30,
                                 what="the first order's 503 with Retry-After")  # fmt: skip
                assert serve.said("retrying in 20.00s") == 1, serve.errors[-10:]
                post_order(serve, client, 7_300_006, "moves7300006")
                time.sleep(1.0)  # journaled and taken by a sender, which waits for the hold (no line says so)
                assert old.requests == 1, "the hold let the second order through"
                moved_at = time.monotonic()
                _reload(serve, working)
                serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7300005", "7300006"], timeout=15,
                                 what="both orders at the new endpoint")  # fmt: skip
                took = time.monotonic() - moved_at
                print(f"\nRetry-After hold: both delivered {took:.1f} s after the reload (hold 20 s)")
                assert took < 10  # not after the 20 s hold
                # One line per connection and run: the first of the two to be parked says it.
                held = "connection fenix moved by a reload while a Retry-After held its requests ("
                retrying = "connection fenix moved by a reload while a delivery was retrying (HTTP 503"
                assert serve.said(held) + serve.said(retrying) == 1, serve.errors[-10:]
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert old.requests == 1, "the held order went to the old endpoint after the move"
    assert not [line for line in serve.errors if "dead letter" in line], serve.errors
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 2
