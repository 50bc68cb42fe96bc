"""The WebSocket fallback (/ws on the HTTP port): the same frames as QUIC, one kind byte each,
in the same matches; bad input closes only that WebSocket; a client that stops reading
costs the server dropped deltas, not memory; shutdown and reconnects as on QUIC.

Raw WebSockets here are aiohttp's client, or a socket that does the handshake by hand
(to stop reading with a small receive buffer); the browser test drives headless Chromium
(skipped without it, unless TICKLINE_REQUIRE_BROWSER is set)."""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.browsers import chromium
from tests.support import until
from tickline.bots.client import ClientOptions, GameClient
from tickline.server.websocket import DATAGRAM_BUFFER_LIMIT, MAX_MESSAGE, WebSocketChannel, close_reason
from tickline.shared.protocol import (
    MAX_DATAGRAM,
    PROTOCOL_VERSION,
    WS_CONTROL,
    WS_DATAGRAM,
    Bye,
    Hello,
    Input,
    StreamDecoder,
    Welcome,
    encode,
    encode_stream,
)

MOVE = {"mx": 1, "my": 0, "ax": 1, "ay": 0, "fire": False}


def _hello(name: str = "raw") -> bytes:
    return WS_CONTROL + encode_stream(Hello(version=PROTOCOL_VERSION, name=name))


def _framed(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


@asynccontextmanager
async def raw_websocket(http_port: int) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{http_port}/ws", max_msg_size=MAX_MESSAGE) as ws,
    ):
        yield ws


async def _next_control_frame(ws: aiohttp.ClientWebSocketResponse, decoder: StreamDecoder) -> Any:
    """The next control-stream frame, skipping datagram messages."""
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.BINARY, f"{msg.type.name}: {msg.data} {msg.extra}"
            if msg.data[:1] == WS_CONTROL:
                frames = decoder.feed(msg.data[1:])
                if frames:
                    assert len(frames) == 1  # the server sends one frame a message
                    return frames[0]


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    """Read until the server closes: its close code and reason."""
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra or ""
            assert msg.type is aiohttp.WSMsgType.BINARY, f"{msg.type.name}: {msg.data}"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _metrics(http_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/metrics") as response:
        return _samples(await response.text())


def _session_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "tickline.server.session" and r.levelno >= logging.WARNING
    ]


async def _keeps_playing(client: GameClient, updates: int = 10) -> None:
    tick = client.world.tick
    for _ in range(updates):
        assert await client.wait_update(timeout=2), f"stopped receiving: {client.close_reason}"
        client.send_input(MOVE)
    assert client.world.tick > tick and not client.closed.is_set()


# ---------------------------------------------------------------------- playing


@pytest.mark.both_loops
async def test_a_websocket_player_and_a_quic_player_play_one_match_and_see_each_other(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0}, metrics_port=0)
    http_port = srv.server.metrics_port
    async with (
        GameClient.connect("127.0.0.1", srv.port, "native", cafile=srv.cert) as native,
        GameClient.connect("127.0.0.1", srv.port, "browser", transport="websocket", http_port=http_port) as web,
    ):
        assert (native.transport, web.transport) == ("quic", "websocket")
        assert web.match_id == native.match_id and web.player_id != native.player_id
        match = srv.server.matches[0]
        await until(lambda: web.player_id in match.state["players"])  # it joins at the next tick
        start_x = match.state["players"][web.player_id]["x"]
        for _ in range(30):
            assert await web.wait_update(timeout=2), web.close_reason
            web.send_input({"mx": 1, "my": 0, "ax": 1, "ay": 0, "fire": False})
            native.send_input({"mx": 0, "my": 1, "ax": 1, "ay": 0, "fire": False})
        await until(lambda: native.world.tick >= web.world.tick - 2)
        # The match applied the WebSocket player's inputs: it moved right, and its deltas say so.
        assert match.state["players"][web.player_id]["x"] > start_x
        assert web.world.server_seq > 0 and web.stats.deltas_applied >= 30
        # Each sees the other's entity, whatever carries its bytes.
        assert str(native.player_id) in web.world.view["players"]
        assert str(web.player_id) in native.world.view["players"]
        assert web.world.view["players"][str(web.player_id)]["name"] == "browser"
        samples = await _metrics(http_port)
    assert samples[("tickline_connections", (("transport", "quic"),))] == 1
    assert samples[("tickline_connections", (("transport", "websocket"),))] == 1


# ---------------------------------------------------------------------- bad input

# (what the bad WebSocket sends, whether it says hello first, words the close reason must contain)
BAD: dict[str, tuple[bytes | str, bool, str]] = {
    "unknown_kind": (b"\x07" + encode_stream(Hello(version=PROTOCOL_VERSION, name="x")), False, "message kind 07"),
    "empty_message": (b"", False, "message kind in an empty message"),
    "text_message": ("hello", False, "text message"),
    "malformed_control_frame": (WS_CONTROL + _framed(b"{not json"), False, "not valid JSON"),
    "unknown_frame_type": (WS_CONTROL + _framed(orjson.dumps({"t": "teleport"})), False, "unknown frame type"),
    "malformed_datagram": (WS_DATAGRAM + b"\xff\xfe garbage", True, "not valid JSON"),
    "oversized_datagram": (
        WS_DATAGRAM + orjson.dumps({"t": "in", "ack": 0, "inputs": [], "pad": "x" * MAX_DATAGRAM}),
        True,
        "exceeds",
    ),
    "input_out_of_range": (WS_DATAGRAM + encode(Input(ack=0, inputs=[[1, {"mx": 5}]])), True, "'mx' must be"),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_garbage_closes_only_that_websocket_with_a_reason_and_one_log_line(case, start_server, caplog) -> None:
    payload, after_welcome, words = BAD[case]
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    async with GameClient.connect("127.0.0.1", srv.port, "bystander", cafile=srv.cert) as good:
        await good.wait_update(timeout=2)
        async with raw_websocket(srv.server.metrics_port) as bad:
            if after_welcome:
                await bad.send_bytes(_hello())
                assert isinstance(await _next_control_frame(bad, StreamDecoder()), Welcome)
            if isinstance(payload, str):
                await bad.send_str(payload)
            else:
                await bad.send_bytes(payload)
            code, reason = await _closed(bad)
        assert code == 1008 and words in reason
        await _keeps_playing(good)
    warnings = _session_warnings(caplog)
    assert len(warnings) == 1 and words in warnings[0] and "websocket 127.0.0.1:" in warnings[0]


async def test_a_message_over_the_size_cap_closes_that_websocket_as_too_big(start_server, caplog) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    async with GameClient.connect("127.0.0.1", srv.port, "bystander", cafile=srv.cert) as good:
        async with raw_websocket(srv.server.metrics_port) as bad:
            await bad.send_bytes(WS_CONTROL + bytes(MAX_MESSAGE))
            code, _ = await _closed(bad)
        assert code == 1009  # aiohttp's own close: "message too big"
        await _keeps_playing(good)
    warnings = _session_warnings(caplog)
    assert len(warnings) == 1 and "exceeds limit" in warnings[0]


def test_a_close_reason_is_cut_to_123_bytes_between_characters() -> None:
    assert close_reason("done") == b"done"
    cut = close_reason("é" * 100)  # 200 bytes of UTF-8
    assert len(cut) == 122 and cut.decode() == "é" * 61


# ---------------------------------------------------------------------- backpressure


def _masked(payload: bytes) -> bytes:
    """One binary WebSocket frame as a client sends it (masked)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = (
        bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    )
    return bytes([0x82]) + length + mask + masked


async def _stalled_websocket(http_port: int, name: str) -> socket.socket:
    """A WebSocket, opened by hand on a socket with a small receive buffer, that says hello
    and then never reads again (a frozen tab, a dead-slow link)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", http_port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    async with asyncio.timeout(5):
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)  # byte by byte: nothing past the headers is read
    assert head.startswith(b"HTTP/1.1 101"), head
    await loop.sock_sendall(sock, _masked(_hello(name)))
    return sock


@pytest.mark.slow
@pytest.mark.both_loops
async def test_a_client_that_stops_reading_has_its_datagrams_dropped_then_its_connection(start_server) -> None:
    # idle_timeout 2 s: the server pings a WebSocket after 1 s of silence, and waits 0.5 s for the pong.
    srv = await start_server(
        game_config={"time_limit_s": 60, "view_radius": 0}, send_rate=60, metrics_port=0, idle_timeout=2.0
    )
    http_port = srv.server.metrics_port
    loop = asyncio.get_running_loop()
    ack_only = _masked(WS_DATAGRAM + encode(Input(ack=0, inputs=[])))
    # (Off the fast path, whose QUIC keepalive is slower than this idle timeout.)
    quic_only = ClientOptions(fast=False)
    async with GameClient.connect("127.0.0.1", srv.port, "native", cafile=srv.cert, options=quic_only) as native:
        sock = await _stalled_websocket(http_port, "frozen")
        try:
            match = srv.server.matches[0]
            await until(lambda: len(match.sessions) == 2)
            (channel,) = srv.server.websockets.channels
            assert isinstance(channel, WebSocketChannel)
            # The native player plays while the frozen one, which still sends but never
            # reads, has its backlog fill up.
            async with asyncio.timeout(20):
                while channel.datagrams_dropped < 30:
                    await _keeps_playing(native, 1)
                    await loop.sock_sendall(sock, ack_only)
            # From now on its deltas are dropped, and what waits for it stays bounded.
            tick, dropped = match.tick, channel.datagrams_dropped
            for _ in range(30):
                await _keeps_playing(native, 1)
                await loop.sock_sendall(sock, ack_only)
                assert channel.buffered() <= DATAGRAM_BUFFER_LIMIT + 1 + MAX_DATAGRAM
            assert match.tick >= tick + 30
            assert channel.datagrams_dropped >= dropped + 20
            samples = await _metrics(http_port)
            assert samples[("tickline_websocket_datagrams_dropped_total", ())] >= dropped
            # Silent too now: no pong comes, so the server drops the connection and what it
            # held for it (a reset, seen here without reading a byte); the player keeps its place.
            await until(lambda: not srv.server.websockets.channels, timeout=5)
            await until(lambda: sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET, timeout=5)
            assert match.live_figures()["away"] == 1
            await _keeps_playing(native)
        finally:
            sock.close()


# ---------------------------------------------------------------------- shutdown, reconnects


@pytest.mark.both_loops
async def test_server_shutdown_closes_websockets_with_the_reason(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    http_port = srv.server.metrics_port
    async with (
        GameClient.connect("127.0.0.1", srv.port, "sdk", transport="websocket", http_port=http_port) as client,
        raw_websocket(http_port) as raw,
    ):
        await raw.send_bytes(_hello())
        decoder = StreamDecoder()
        assert isinstance(await _next_control_frame(raw, decoder), Welcome)
        await _keeps_playing(client, 3)
        stopping = asyncio.create_task(srv.stop())
        # The raw client is told on the control stream first, as a QUIC one is; it does not
        # close, so the server closes the WebSocket with the same reason.
        assert await _next_control_frame(raw, decoder) == Bye(reason="server shutting down")
        assert await _closed(raw) == (1000, "server shutting down")
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_reason == "server shutting down"
        await stopping
    assert not srv.server.websockets.channels


async def test_reconnect_with_the_welcome_token_over_websocket_gets_the_same_player_back(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    http_port = srv.server.metrics_port
    async with GameClient.connect("127.0.0.1", srv.port, "keeper", cafile=srv.cert) as keeper:
        async with GameClient.connect("127.0.0.1", srv.port, "web", transport="websocket", http_port=http_port) as web:
            await _keeps_playing(web, 3)
            player_id, token, world = web.player_id, web.token, web.world
            web.abandon()  # as a dropped connection: no goodbye
        match = srv.server.matches[0]
        await until(lambda: match.live_figures()["away"] == 1)
        async with GameClient.connect(
            "127.0.0.1", srv.port, "web", token=token, world=world, transport="websocket", http_port=http_port
        ) as again:
            assert again.player_id == player_id and again.match_id == match.match_id
            await _keeps_playing(again, 5)
            assert match.live_figures()["players"] == 2
        await _keeps_playing(keeper, 3)


async def test_websocket_transport_needs_the_http_port() -> None:
    with pytest.raises(ValueError, match="http_port"):
        async with GameClient.connect("127.0.0.1", 1, "x", transport="websocket"):
            pass


# ---------------------------------------------------------------------- a browser


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium, the system's own (Playwright downloads no browser here)."""
    async with chromium() as launched:
        yield launched


# Opens the WebSocket, says hello in a control message, and resolves with the welcome and
# whether a datagram message (a delta) followed it.
HELLO_FROM_A_PAGE = """async (url) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("no WebSocket")); });
  const body = new TextEncoder().encode(JSON.stringify({t: "hello", version: 1, name: "chromium"}));
  const message = new Uint8Array(5 + body.length);
  new DataView(message.buffer).setUint32(1, body.length);  // message[0] = 0x00: the control stream
  message.set(body, 5);
  ws.send(message);
  const result = await new Promise((ok) => {
    let welcome = null;
    ws.onmessage = (event) => {
      const data = new Uint8Array(event.data);
      if (data[0] === 0 && welcome === null) {
        welcome = JSON.parse(new TextDecoder().decode(data.subarray(5)));
      } else if (data[0] === 1 && welcome !== null) {
        ok({welcome, delta: JSON.parse(new TextDecoder().decode(data.subarray(1)))});
      }
    };
  });
  ws.close(1000, "page done");
  return result;
}"""


async def test_a_browser_page_says_hello_over_a_websocket_and_gets_a_welcome_and_deltas(browser, start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60}, metrics_port=0)
    http_port = srv.server.metrics_port
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{http_port}/healthz")
    result = await asyncio.wait_for(page.evaluate(HELLO_FROM_A_PAGE, f"ws://127.0.0.1:{http_port}/ws"), 15)
    assert result["welcome"]["t"] == "welcome" and result["welcome"]["player_id"] == 1
    assert result["welcome"]["game"] == "arena" and result["welcome"]["token"]
    delta = result["delta"]
    assert delta["t"] == "d" and delta["base"] == 0  # a full snapshot: the page acknowledged nothing
    assert "1" in delta["diff"]["s"]["players"]
    await page.close()
    await until(lambda: not srv.server.websockets.channels)
