#!/usr/bin/env python3
"""Protocol tests with Python's `gql` client (pinned in requirements.txt), as its docs start it.

- `AIOHTTPTransport`: queries and mutations as JSON; subscriptions over the multipart HTTP
  protocol (it asks `Accept: multipart/mixed;boundary=graphql;subscriptionSpec=1.0,
  application/json` and reads the answer's content-type for `boundary=graphql` and
  `subscriptionSpec=1.0`).
- `WebsocketsTransport` with its defaults: it offers both subprotocols (`graphql-ws` and
  `graphql-transport-ws`) and reads which one the server chose from the handshake's
  `Sec-WebSocket-Protocol` header, by that exact spelling.

Each test class starts its own testbed (examples/testbed: a REST upstream and the real
gateway), from $TESTBED_BIN or target/debug/examples/testbed, reads the one JSON line it
prints, and stops it by closing its standard input. Every await is bounded, so a test that
does not get its answer fails instead of hanging.

Run: `python tests/python/test_gql.py` (in a venv with requirements.txt); exits non-zero
on any failure.
"""

import asyncio
import json
import os
import selectors
import subprocess
import sys
import time
import unittest
from pathlib import Path

from gql import Client, GraphQLRequest, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.websockets import WebsocketsTransport

ROOT = Path(__file__).resolve().parents[2]
TESTBED_BIN = os.environ.get("TESTBED_BIN") or str(ROOT / "target/debug/examples/testbed")
TIMEOUT = 30  # seconds, for each awaited step


class Testbed:
    """The testbed binary: `gateway`, `upstream` (http://…), `graphql` and `ws` URLs."""

    def __init__(self, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [TESTBED_BIN, *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
        )
        try:
            line = self._first_line(TIMEOUT)
            info = json.loads(line)
        except BaseException:
            self.stop()
            raise
        self.gateway = info["gateway"]
        self.upstream = info["upstream"]
        self.graphql = f"{self.gateway}/graphql"
        self.ws = self.graphql.replace("http", "ws", 1)

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        end = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = end - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"testbed printed no line within {timeout} s")
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"testbed exited ({self.proc.wait()}) before printing its line")
                buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode()

    def stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def bounded(aw, what: str):
    """`aw`, or a failure naming `what` after TIMEOUT seconds."""

    async def run():
        try:
            return await asyncio.wait_for(aw, TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}") from None

    return run()


class TestbedCase(unittest.IsolatedAsyncioTestCase):
    tb: Testbed

    @classmethod
    def setUpClass(cls) -> None:
        cls.tb = Testbed()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tb.stop()


class MultipartHttp(TestbedCase):
    """gql's AIOHTTPTransport: a subscription over multipart HTTP, mutations as JSON."""

    async def test_query_and_mutation_over_http(self):
        async def run():
            client = Client(transport=AIOHTTPTransport(url=self.tb.graphql))
            async with client as session:
                got = await session.execute(gql('{ counter { parity } }'))
                self.assertEqual(got, {"counter": {"parity": "even"}})
                sent = await session.execute(
                    GraphQLRequest(
                        'mutation ($text: String!) { sendMessage(channel: "py-http", text: $text) { id text } }',
                        variable_values={"text": "plain"},
                    )
                )
                self.assertEqual(sent, {"sendMessage": {"id": "1", "text": "plain"}})

        await bounded(run(), "the query and the mutation over HTTP")

    async def test_live_subscription_over_multipart(self):
        async def run():
            client = Client(transport=AIOHTTPTransport(url=self.tb.graphql))
            async with client as session:
                results = session.subscribe(gql('subscription { messages(channel: "py-mp") { text } }'))
                try:
                    first = await bounded(anext(results), "the first multipart result")
                    self.assertEqual(first, {"messages": []})
                    # A mutation (its own request, on a second session) pushes the new list.
                    async with Client(transport=AIOHTTPTransport(url=self.tb.graphql)) as other:
                        await other.execute(gql('mutation { sendMessage(channel: "py-mp", text: "over multipart") { id } }'))
                    second = await bounded(anext(results), "the second multipart result")
                    self.assertEqual(second, {"messages": [{"text": "over multipart"}]})
                finally:
                    await results.aclose()

        await bounded(run(), "the multipart subscription")


class DefaultWebsocket(TestbedCase):
    """gql's WebsocketsTransport, as it comes: both subprotocols offered."""

    async def test_query_over_websocket(self):
        async def run():
            async with Client(transport=WebsocketsTransport(url=self.tb.ws)) as session:
                got = await session.execute(gql('{ counter { parity } }'))
                self.assertEqual(got, {"counter": {"parity": "even"}})

        await bounded(run(), "the query over WebSocket")

    async def test_live_subscription_over_websocket(self):
        async def run():
            async with Client(transport=WebsocketsTransport(url=self.tb.ws)) as session:
                results = session.subscribe(gql('subscription { messages(channel: "py-ws") { text } }'))
                try:
                    first = await bounded(anext(results), "the first WebSocket result")
                    self.assertEqual(first, {"messages": []})
                    sent = await session.execute(
                        gql('mutation { sendMessage(channel: "py-ws", text: "over websocket") { text } }')
                    )
                    self.assertEqual(sent, {"sendMessage": {"text": "over websocket"}})
                    second = await bounded(anext(results), "the second WebSocket result")
                    self.assertEqual(second, {"messages": [{"text": "over websocket"}]})
                finally:
                    await results.aclose()

        await bounded(run(), "the WebSocket subscription")


def main() -> int:
    if not os.access(TESTBED_BIN, os.X_OK):
        print(f"test_gql: no testbed binary at {TESTBED_BIN} (cargo build --examples)", file=sys.stderr)
        return 2
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    print(f"gql: {result.testsRun - failed} passed, {failed} failed")
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
