"""A TCP forwarder on 127.0.0.1 between a client and PostgreSQL that can be partitioned: it then forwards
nothing either way and closes nothing, so a connection stays open, its writes acknowledged by the forwarder's
kernel, its reads unanswered. Neither the server's ``statement_timeout`` (the statement never reaches it) nor
TCP's keepalives (the forwarder's kernel answers them) end such a wait: only the statement watchdog
(``_store/_pg_watchdog``) does."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit

CHUNK = 65536


class _Flow:
    """One client connection through the forwarder, and its upstream."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.dead = False  # lost to a partition: nothing more is forwarded, nothing is closed
        self.writers = [client]


class Forwarder:
    """A TCP forwarder on 127.0.0.1 to ``target`` (host, port), on an event loop of its own thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.partitioned = False
        self._flows: list[_Flow] = []  # every flow, dead ones too: their sockets stay open until close()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @classmethod
    def to(cls, url: str) -> tuple[Forwarder, str]:
        """A forwarder to the PostgreSQL server of ``url``, and the same database's URL through it."""
        address = urlsplit(url)
        assert address.hostname and address.port
        forwarder = cls((address.hostname, address.port))
        return forwarder, url.replace(f"@{address.hostname}:{address.port}/", f"@127.0.0.1:{forwarder.port}/")

    def partition(self) -> None:
        """From now on (when it returns) nothing is forwarded, on the flows open now or on new ones; nothing is
        closed."""

        async def cut() -> None:
            self.partitioned = True
            for flow in self._flows:
                flow.dead = True

        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(10)

    def heal(self) -> None:
        """New connections are forwarded again; the flows of before stay silent."""
        self._loop.call_soon_threadsafe(setattr, self, "partitioned", False)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flow = _Flow(writer)
        self._flows.append(flow)
        if self.partitioned:
            flow.dead = True
            await self._drop(reader)
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        flow.writers.append(up_writer)
        await asyncio.gather(self._pump(flow, reader, up_writer), self._pump(flow, up_reader, writer))

    async def _pump(self, flow: _Flow, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            if flow.dead:
                await self._drop(reader)
                return
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _drop(reader: asyncio.StreamReader) -> None:
        """Read and discard until the peer closes: its writes are acknowledged, never answered."""
        while await reader.read(CHUNK):
            pass

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for flow in self._flows:
                for writer in flow.writers:
                    writer.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            # Ended here, not destroyed pending by a later garbage collection (whose warnings, run inside an
            # ast.parse of pytest's, made CPython 3.11 raise SystemError at the session's end).
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
