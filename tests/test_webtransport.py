"""WebTransport on tickline's QUIC port: browsers' way in, beside native clients.

A Python WebTransport client (aioquic's HTTP/3 with an extended CONNECT) plays in
the same match as a native client; bad requests and bad bytes close only their
own connection; real headless Chromium and Firefox play from a page that pins the
certificate's hash; and the certificate rotation is tested sans-I/O with fake
times, then on a real server (a new connection after the switch gets the new
certificate).

The Chromium test skips without a Chromium at TICKLINE_CHROMIUM (default
/usr/bin/chromium), unless TICKLINE_REQUIRE_BROWSER is set (as CI sets it):
there it fails instead. The Firefox test (Debian's firefox-esr, driven over the
WebDriver BiDi it serves itself) skips without a Firefox at TICKLINE_FIREFOX.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioquic._buffer import Buffer
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from tests.browsers import open_page, page_server
from tests.support import until
from tickline.bots.client import ClientError, GameClient
from tickline.bots.world import ClientWorld
from tickline.replays.reader import LogReader
from tickline.replays.verify import verify_match
from tickline.server import webtransport
from tickline.server.session import Departure
from tickline.server.tls import (
    ANNOUNCE_BEFORE,
    BACKDATE,
    OVERLAP,
    SWITCH_MARGIN,
    VALIDITY,
    Action,
    CertificateInfo,
    Certificates,
    Rotation,
    certificate_sha256,
    make_certificate,
    utc_now,
)
from tickline.shared.protocol import (
    DEFLATE,
    MAX_DATAGRAM,
    PACKED_DELTA,
    PROTOCOL_VERSION,
    QUIC_PACKET_SIZE,
    WEBTRANSPORT_PATH,
    Bye,
    Delta,
    Frame,
    Hello,
    Input,
    StreamDecoder,
    Welcome,
    decode_datagram,
    encode,
    encode_delta,
    encode_stream,
    split_packed_delta,
)

CLOSE_WEBTRANSPORT_SESSION = 0x2843  # the capsule's type
# Everyone sees everyone (arena's view_radius 0), for a minute.
ARENA = {"view_radius": 0, "time_limit_s": 60}


# ---------------------------------------------------------------------- a Python WebTransport client


class WebTransportClient(QuicConnectionProtocol):
    """A WebTransport client on aioquic's HTTP/3, doing what a page does: CONNECT, one
    bidirectional stream for the control frames, datagrams for the rest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        # As Chromium does, answer the server's close capsule by ending the session's stream.
        self.answer_close = True
        self.session_id = -1
        self.stream_id = -1
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.terminated: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # (code, reason) of the server's CLOSE_WEBTRANSPORT_SESSION capsule: what a page reads
        # from WebTransport.closed.
        self.session_closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.decoder = StreamDecoder()
        self.frames: list[Frame] = []
        self.datagrams: list[bytes] = []
        self.changed = asyncio.Event()

    def open_session(self, path: str = WEBTRANSPORT_PATH, method: bytes = b"CONNECT") -> None:
        self.session_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            (b":path", path.encode()),
        ]
        if method == b"CONNECT":
            headers += [(b":protocol", b"webtransport"), (b"sec-webtransport-http3-draft02", b"1")]
        self.http.send_headers(self.session_id, headers, end_stream=method != b"CONNECT")
        self.transmit()

    def open_stream(self) -> None:
        self.stream_id = self.http.create_webtransport_stream(self.session_id)
        self.transmit()

    def send_stream(self, data: bytes) -> None:
        self._quic.send_stream_data(self.stream_id, data)
        self.transmit()

    def send_datagram(self, data: bytes) -> None:
        self.http.send_datagram(self.session_id, data)
        self.transmit()

    def send_on_another_stream(self, data: bytes) -> None:
        """A second bidirectional WebTransport stream in the session, with ``data`` on it."""
        stream_id = self.http.create_webtransport_stream(self.session_id)
        self._quic.send_stream_data(stream_id, data)
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == self.stream_id:
            # aioquic's client side parses the server's bytes on a WebTransport stream it
            # opened as HTTP/3 frames (and makes no event of them): read them raw instead.
            # (Given to it, they close the connection: "DATA frame is not allowed in this state".)
            self.frames.extend(self.decoder.feed(event.data))
            self.changed.set()
            return
        if isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event.reason_phrase)
        for h3 in self.http.handle_event(event):
            if isinstance(h3, HeadersReceived) and h3.stream_id == self.session_id and not self.status.done():
                self.status.set_result(int(dict(h3.headers)[b":status"]))
            elif isinstance(h3, DatagramReceived) and h3.stream_id == self.session_id:
                self.datagrams.append(h3.data)
            elif isinstance(h3, DataReceived) and h3.stream_id == self.session_id and h3.data:
                self._capsule(h3.data)
        self.changed.set()

    def _capsule(self, data: bytes) -> None:
        buf = Buffer(data=data)
        kind, length = buf.pull_uint_var(), buf.pull_uint_var()
        assert kind == CLOSE_WEBTRANSPORT_SESSION and length == buf.capacity - buf.tell(), data
        code = buf.pull_uint32()
        if not self.session_closed.done():
            self.session_closed.set_result((code, buf.pull_bytes(length - 4).decode()))
        if self.answer_close:
            self.http.send_data(self.session_id, b"", end_stream=True)
            self.transmit()

    async def next_frame(self, timeout: float = 5.0) -> Frame:
        async with asyncio.timeout(timeout):
            while not self.frames:
                self.changed.clear()
                await self.changed.wait()
        return self.frames.pop(0)

    async def next_datagram(self, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            while not self.datagrams:
                self.changed.clear()
                await self.changed.wait()
        return self.datagrams.pop(0)

    async def closed_reason(self, timeout: float = 5.0) -> str:
        return await asyncio.wait_for(asyncio.shield(self.terminated), timeout)


@asynccontextmanager
async def wt_client(port: int, cafile: Path | None = None) -> AsyncIterator[WebTransportClient]:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536, max_datagram_size=QUIC_PACKET_SIZE
    )
    if cafile is not None:
        config.load_verify_locations(cafile=str(cafile))
    else:
        config.verify_mode = ssl.CERT_NONE
    async with connect("127.0.0.1", port, configuration=config, create_protocol=WebTransportClient) as client:
        assert isinstance(client, WebTransportClient)
        yield client


async def _join(client: WebTransportClient, name: str, caps: list[Any] | None = None) -> Welcome:
    client.open_session()
    assert await asyncio.wait_for(client.status, 5) == 200
    client.open_stream()
    client.send_stream(encode_stream(Hello(version=PROTOCOL_VERSION, name=name, caps=caps or [])))
    welcome = await client.next_frame()
    assert isinstance(welcome, Welcome), welcome
    return welcome


class WebPlayer:
    """A WebTransport client's player: applies deltas (packed or not), sends inputs as datagrams."""

    def __init__(self, client: WebTransportClient) -> None:
        self.client = client
        self.world = ClientWorld()
        self.datagrams = 0
        self.packed = 0

    async def step(self, controls: dict[str, Any]) -> None:
        """Take one delta datagram, then send an input datagram (acking what the world holds)."""
        data = await self.client.next_datagram()
        self.datagrams += 1
        if data[:1] == PACKED_DELTA:
            self.packed += 1
            self.world.on_packed_delta(*split_packed_delta(data))
        else:
            frame = decode_datagram(data)
            assert isinstance(frame, Delta)
            self.world.on_delta(frame)
        self.world.next_input(controls)
        self.client.send_datagram(encode(self.world.input_frame()))


# ---------------------------------------------------------------------- (a) playing over WebTransport


@pytest.mark.both_loops
async def test_a_webtransport_player_and_a_native_player_share_a_match(start_server) -> None:
    srv = await start_server(game_config=ARENA)
    async with (
        GameClient.connect("127.0.0.1", srv.port, "native", cafile=srv.cert) as native,
        wt_client(srv.port, cafile=srv.cert) as client,
    ):
        welcome = await _join(client, "browser", caps=[DEFLATE])
        assert welcome.player_id == 2 and welcome.match_id == native.match_id
        match = srv.server.matches[0]
        web = WebPlayer(client)
        await web.step({"mx": 0, "my": 0})  # the first view: the player has joined
        start_x = match.state["players"][2]["x"]
        for _ in range(39):
            await web.step({"mx": 1, "my": 0})
            native.send_input({"mx": 0, "my": 1})
        # The match applied the WebTransport player's inputs: it walked right.
        assert match.state["players"][2]["x"] > start_x
        assert srv.server.matches[0].sessions[2].applied_seq > 0
        # Deltas came as (packed) WebTransport datagrams, against acknowledged views.
        assert web.packed == web.datagrams == 40
        # Both see each other.
        await until(lambda: "2" in native.world.view.get("players", {}))
        assert native.world.view["players"]["2"]["name"] == "browser"
        assert web.world.view["players"]["1"]["name"] == "native"
        match_id = native.match_id
    await srv.stop()
    async with await LogReader.open(srv.db_url) as reader:
        result = await verify_match(reader, match_id)
    assert result.verified, result.reason


async def test_a_webtransport_client_gets_no_fast_path_and_full_size_datagrams_arrive(start_server) -> None:
    """The fast path is for native clients; a delta of MAX_DATAGRAM bytes still fits one packet
    with the HTTP/3 datagram's prefix (aioquic would drop it silently if it did not)."""
    srv = await start_server(game_config=ARENA)
    async with wt_client(srv.port, cafile=srv.cert) as client:
        await _join(client, "browser", caps=[DEFLATE, "fastpath"])
        web = WebPlayer(client)
        for _ in range(3):
            await web.step({"mx": 1, "my": 0})
        assert client.frames == []  # no fast-path keys after the welcome
        session = srv.server.matches[0].sessions[1]
        pad = b'{"s":{"pad":"%s"}}'
        body = encode_delta(1, 1, 0, pad % b"")
        body = encode_delta(1, 1, 0, pad % (b"x" * (MAX_DATAGRAM - len(body))))
        assert len(body) == MAX_DATAGRAM
        session.channel.send_datagram(body)
        await until(lambda: body in client.datagrams)
        with pytest.raises(ValueError, match="exceeds"):
            session.channel.send_datagram(body + b" ")


# ---------------------------------------------------------------------- (b) what is refused


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        (b"CONNECT", "/nope", "no WebTransport CONNECT to /nope here: open a WebTransport session to /tickline"),
        (b"GET", "/tickline", "no GET /tickline here: open a WebTransport session to /tickline"),
    ],
)
async def test_a_request_for_anything_else_is_answered_404_and_closed_with_a_reason(
    start_server, caplog, method: bytes, path: str, words: str
) -> None:
    srv = await start_server(game_config=ARENA)
    async with wt_client(srv.port, cafile=srv.cert) as client:
        client.open_session(path, method)
        assert await asyncio.wait_for(client.status, 5) == 404
        assert words in await client.closed_reason()
    warnings = [r.getMessage() for r in caplog.records if r.name == "tickline.server.session"]
    assert len(warnings) == 1 and words in warnings[0]
    assert srv.server.kicked == 1


# (what the WebTransport client sends after its welcome, and how: words the close reason must contain)
AFTER_WELCOME = {
    "garbage_on_the_control_stream": ("stream", b"\x00\x00\x00\x05hello", "not valid JSON"),
    "garbage_datagram": ("datagram", b"\xff\xfe garbage", "not valid JSON"),
    "a_second_stream": ("second stream", encode_stream(Hello(version=PROTOCOL_VERSION, name="x")), "only one control"),
    "input_out_of_range": ("datagram", encode(Input(ack=0, inputs=[[1, {"mx": 5}]])), "'mx' must be -1, 0 or 1"),
}


@pytest.mark.parametrize("case", sorted(AFTER_WELCOME))
async def test_bad_bytes_on_webtransport_close_only_that_connection(start_server, caplog, case: str) -> None:
    how, payload, words = AFTER_WELCOME[case]
    srv = await start_server(game_config=ARENA)
    async with GameClient.connect("127.0.0.1", srv.port, "bystander", cafile=srv.cert) as good:
        async with wt_client(srv.port, cafile=srv.cert) as bad:
            await _join(bad, "bad")
            if how == "stream":
                bad.send_stream(payload)
            elif how == "datagram":
                bad.send_datagram(payload)
            else:
                bad.send_on_another_stream(payload)
            code, reason = await asyncio.wait_for(bad.session_closed, 5)
            assert code == 1 and words in reason  # what the page reads from WebTransport.closed
            assert await bad.closed_reason() == reason  # then the connection ends
        # The match plays on for the native player.
        tick = good.world.tick
        for _ in range(10):
            assert await good.wait_update(timeout=2), good.close_reason
            good.send_input({"mx": 1, "my": 0})
        assert good.world.tick > tick and not good.closed.is_set()
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "tickline.server.session" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1 and words in warnings[0]


async def test_a_page_that_ignores_the_close_capsule_is_disconnected_after_a_grace_period(
    start_server, monkeypatch
) -> None:
    monkeypatch.setattr(webtransport, "CLOSE_GRACE_S", 0.2)
    srv = await start_server(game_config=ARENA)
    async with wt_client(srv.port, cafile=srv.cert) as bad:
        bad.answer_close = False
        await _join(bad, "bad")
        bad.send_datagram(b"garbage")
        assert (await asyncio.wait_for(bad.session_closed, 5))[0] == 1
        assert not bad.terminated.done()
        assert "not valid JSON" in await bad.closed_reason()


@pytest.mark.slow
async def test_the_end_of_a_match_reaches_the_page_with_its_reason(start_server) -> None:
    srv = await start_server(game_config={**ARENA, "time_limit_s": 1})
    async with wt_client(srv.port, cafile=srv.cert) as client:
        await _join(client, "browser")
        # The session ends with the reason, after the goodbye on the control stream.
        assert await asyncio.wait_for(client.session_closed, 10) == (0, "match over")
        assert any(isinstance(f, Bye) and f.reason == "match over" for f in client.frames)


async def test_a_webtransport_connection_that_never_says_hello_is_closed_after_the_hello_timeout(start_server) -> None:
    srv = await start_server(hello_timeout=0.5)
    async with wt_client(srv.port, cafile=srv.cert) as idle:  # no session, no stream: nothing at all
        assert await idle.closed_reason() == "no hello within 0.5 s"


# ---------------------------------------------------------------------- (c) real browsers

# What a page does, started by page.evaluate and watched through window.tl: a WebTransport
# session pinned by the certificate's hash, a hello on one bidirectional stream (4-byte
# big-endian length, then JSON), the welcome read back, then for each delta datagram
# (packed ones inflated with DecompressionStream) one input datagram acking the view it made.
PAGE_CLIENT = r"""
async ({url, hashes, name}) => {
  const tl = window.tl = {
    welcome: null, datagrams: 0, deltas: 0, packed: 0, largest: 0, view: {}, error: null, closed: null, close: null,
  };
  const hex = h => new Uint8Array(h.match(/../g).map(b => parseInt(b, 16)));
  const enc = new TextEncoder(), dec = new TextDecoder();
  const frame = obj => {
    const body = enc.encode(JSON.stringify(obj));
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, body.length);
    out.set(body, 4);
    return out;
  };
  const apply = (base, d) => {  // shared/delta.py's apply
    const out = Object.assign({}, base);
    for (const [k, sub] of Object.entries(d.u || {})) out[k] = apply(out[k], sub);
    for (const [k, inc] of Object.entries(d.n || {})) out[k] += inc;
    Object.assign(out, d.s || {});
    for (const k of d.r || []) delete out[k];
    return out;
  };
  const inflate = async bytes =>
    new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"))).text();
  try {
    const wt = new WebTransport(url, {serverCertificateHashes: hashes.map(h => ({algorithm: "sha-256", value: hex(h)}))});
    wt.closed.then(info => { tl.closed = info; }, err => { tl.closed = String(err); });
    tl.close = () => wt.close();
    await wt.ready;
    const stream = await wt.createBidirectionalStream();
    await stream.writable.getWriter().write(frame({t: "hello", version: 1, name, caps: ["deflate"]}));
    const reader = stream.readable.getReader();
    let buf = new Uint8Array(0);
    while (!tl.welcome) {
      const {value, done} = await reader.read();
      if (done) throw new Error("the control stream ended before the welcome");
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      if (buf.length >= 4) {
        const n = new DataView(buf.buffer).getUint32(0);
        if (buf.length >= 4 + n) tl.welcome = JSON.parse(dec.decode(buf.subarray(4, 4 + n)));
      }
    }
    const views = new Map([[0, {}]]);
    let tick = 0, seq = 0;
    const sent = [];
    const up = wt.datagrams.writable.getWriter();
    const down = wt.datagrams.readable.getReader();
    for (;;) {
      const {value, done} = await down.read();
      if (done) return;
      tl.datagrams += 1;
      tl.largest = Math.max(tl.largest, value.byteLength);
      let d;
      if (value[0] === 0x7a) {  // "z": a packed delta
        const head = new DataView(value.buffer, value.byteOffset, 13);
        d = {tick: head.getUint32(1), base: head.getUint32(5), seq: head.getUint32(9)};
        if (d.tick <= tick || !views.has(d.base)) continue;
        d.diff = JSON.parse(await inflate(value.subarray(13)));
        tl.packed += 1;
      } else {
        d = JSON.parse(dec.decode(value));
        if (d.t !== "d" || d.tick <= tick || !views.has(d.base)) continue;
      }
      tl.view = apply(views.get(d.base), d.diff);
      tick = d.tick;
      views.set(tick, tl.view);
      for (const old of views.keys()) if (old && old < tick - 64) views.delete(old);
      tl.deltas += 1;
      sent.push([++seq, {mx: 1, my: 0}]);
      while (sent.length && sent[0][0] <= d.seq) sent.shift();  // the server applied these
      await up.write(enc.encode(JSON.stringify({t: "in", ack: tick, inputs: sent.slice(-4)})));
    }
  } catch (err) {
    tl.error = String(err);
  }
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("browser", ["chromium", "firefox"])
async def test_a_browser_plays_over_webtransport_pinning_the_certificate_hash(
    browser: str, start_server, tmp_path: Path
) -> None:
    srv = await start_server(game_config=ARENA)
    opening = open_page(browser, tmp_path)
    async with (
        opening as page,
        page_server("tickline webtransport") as url,
        GameClient.connect("127.0.0.1", srv.port, "native", cafile=srv.cert) as native,
    ):
        await page.goto(url)
        args = {
            "url": f"https://127.0.0.1:{srv.port}{WEBTRANSPORT_PATH}",
            "hashes": srv.server.certificate_hashes(),
            "name": browser,
        }
        await page.evaluate(f"(({PAGE_CLIENT})({json.dumps(args)}), true)")  # it runs on in the page
        await page.wait_for("window.tl.error || window.tl.closed || window.tl.deltas >= 30", timeout=20)
        tl = await page.evaluate("window.tl")
        assert tl["error"] is None and tl["closed"] is None, (tl["error"], tl["closed"], page.errors)
        assert tl["welcome"]["player_id"] == 2 and tl["welcome"]["match_id"] == native.match_id

        # The server saw the page's player join and applied its inputs (it walks right).
        match = srv.server.matches[0]
        session = match.sessions[2]
        assert session.name == browser and getattr(session.channel, "transport", "") == "webtransport"
        assert session.applied_seq > 0
        x = match.state["players"][2]["x"]
        await page.wait_for(f"window.tl.deltas >= {tl['deltas'] + 10}", timeout=10)
        assert match.state["players"][2]["x"] > x
        # Deltas came down packed, against views the page acknowledged; each side sees the other.
        assert tl["packed"] >= 30 and tl["view"]["players"]["1"]["name"] == "native"
        await until(lambda: "2" in native.world.view.get("players", {}))

        # A datagram of MAX_DATAGRAM bytes reaches the page too (old tick: counted, not applied).
        pad = b'{"s":{"pad":"%s"}}'
        body = encode_delta(1, 0, 0, pad % b"")
        body = encode_delta(1, 0, 0, pad % (b"x" * (MAX_DATAGRAM - len(body))))
        session.channel.send_datagram(body)
        await page.wait_for(f"window.tl.largest === {MAX_DATAGRAM}", timeout=5)

        await page.evaluate("window.tl.close()")  # the page ends its session; the server sees the player go
        await until(lambda: session.closed.is_set())
        # As a closed tab would: without a goodbye, so the player keeps its place for the grace period.
        assert session.close_reason == "client closed its WebTransport session"
        assert session.departure is Departure.LOST

        # Closed by the server, a page is told why (WebTransport.closed resolves with the reason).
        await page.evaluate(f"(({PAGE_CLIENT})({json.dumps(args)}), true)")
        await page.wait_for("window.tl.error || window.tl.closed || window.tl.deltas >= 1", timeout=10)
        again = match.sessions[(await page.evaluate("window.tl.welcome"))["player_id"]]
        again.fail("kicked by the test")
        await page.wait_for("window.tl.closed", timeout=5)
        assert await page.evaluate("window.tl.closed") == {"closeCode": 1, "reason": "kicked by the test"}
    assert not page.errors, page.errors


# ---------------------------------------------------------------------- (d) certificate rotation

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def _info(name: str, made: dt.datetime) -> CertificateInfo:
    return CertificateInfo(name, made - BACKDATE, made - BACKDATE + VALIDITY)


def test_the_successor_is_announced_three_days_before_expiry_and_served_a_day_later() -> None:
    current = _info("a" * 64, T0)
    rotation = Rotation(current)
    announce = current.not_after - ANNOUNCE_BEFORE
    assert rotation.wake_at() == announce
    assert rotation.due(T0) is Action.NOTHING
    assert rotation.due(announce - dt.timedelta(seconds=1)) is Action.NOTHING
    assert rotation.due(announce) is Action.ANNOUNCE

    successor = _info("b" * 64, announce)
    rotation.announced(successor, announce)
    # Both hashes are served during the overlap, the one new connections get first.
    assert rotation.hashes() == ["a" * 64, "b" * 64]
    assert rotation.wake_at() == announce + OVERLAP
    assert rotation.due(announce + OVERLAP - dt.timedelta(seconds=1)) is Action.NOTHING
    assert rotation.due(announce + OVERLAP) is Action.SWITCH

    rotation.switched()
    assert rotation.hashes() == ["b" * 64]
    assert rotation.due(announce + OVERLAP) is Action.NOTHING
    assert rotation.wake_at() == successor.not_after - ANNOUNCE_BEFORE


def test_a_page_that_fetched_the_hashes_within_the_overlap_always_holds_one_that_works() -> None:
    """Simulate a month in hourly steps: whatever hour a page fetched the hashes, the certificate
    new connections get for the next day (the overlap) is among them."""
    rotation = Rotation(_info("0" * 64, T0))
    served: list[tuple[dt.datetime, list[str], str]] = []  # (time, hashes offered, certificate presented)
    made = 0
    for hour in range(30 * 24):
        now = T0 + hour * HOUR
        for _ in range(4):
            action = rotation.due(now)
            if action is Action.ANNOUNCE:
                made += 1
                rotation.announced(_info(f"{made:064d}", now), now)
            elif action is Action.SWITCH:
                rotation.switched()
            else:
                break
        assert rotation.current.not_before <= now < rotation.current.not_after
        assert rotation.current.not_after - rotation.current.not_before < dt.timedelta(days=14)
        served.append((now, rotation.hashes(), rotation.current.sha256))
    assert made == 2  # certificates live 13 days, replaced after 11: two rotations in a month
    for i, (_fetched_at, hashes, _) in enumerate(served):
        for _later, _, presented in served[i : i + 24]:
            assert presented in hashes


def test_a_certificate_near_its_end_at_start_up_is_switched_before_it_expires() -> None:
    current = _info("a" * 64, T0)
    late = current.not_after - 2 * HOUR  # started with two hours left
    rotation = Rotation(current)
    assert rotation.due(late) is Action.ANNOUNCE
    rotation.announced(_info("b" * 64, late), late)
    # The overlap shrinks: the switch comes SWITCH_MARGIN before the old one expires, not a day later.
    assert rotation.switch_at() == current.not_after - SWITCH_MARGIN
    assert rotation.due(current.not_after - SWITCH_MARGIN) is Action.SWITCH


def test_certificates_on_disk_rotate_and_a_restart_during_the_overlap_keeps_both_hashes(tmp_path: Path) -> None:
    certs = Certificates(tmp_path, now=T0)
    assert certs.created and len(certs.hashes()) == 1
    first = certs.hashes()[0]
    assert first == certificate_sha256(certs.cert_path)
    announce = certs.rotation.current.not_after - ANNOUNCE_BEFORE
    assert certs.check(announce - HOUR) is False and certs.hashes() == [first]
    assert certs.check(announce) is False  # announced, not switched
    first_key = certs.key_path.read_bytes()
    assert len(certs.hashes()) == 2 and certs.hashes()[0] == first
    successor = certs.hashes()[1]
    assert [d["status"] for d in certs.describe()] == ["current", "next"]

    again = Certificates(tmp_path, now=announce + HOUR)  # a restart during the overlap
    assert not again.created and again.hashes() == [first, successor]
    assert again.check(announce + OVERLAP) is True
    assert again.hashes() == [successor] == [certificate_sha256(again.cert_path)]
    assert again.key_path.read_bytes() != first_key
    assert not (tmp_path / "next-cert.pem").exists() and not (tmp_path / "next-key.pem").exists()


def test_an_expired_certificate_is_replaced_at_start_up(tmp_path: Path) -> None:
    make_certificate(tmp_path / "cert.pem", tmp_path / "key.pem", T0)
    old = certificate_sha256(tmp_path / "cert.pem")
    certs = Certificates(tmp_path, now=T0 + 20 * DAY)
    assert certs.hashes() != [old] and len(certs.hashes()) == 1
    assert certs.rotation.current.not_before <= T0 + 20 * DAY < certs.rotation.current.not_after


def test_a_key_that_does_not_match_its_certificate_is_replaced(tmp_path: Path) -> None:
    """A crash between the two renames of a switch leaves the new key beside the old certificate."""
    make_certificate(tmp_path / "cert.pem", tmp_path / "key.pem", T0)
    make_certificate(tmp_path / "other-cert.pem", tmp_path / "other-key.pem", T0)
    os.replace(tmp_path / "other-key.pem", tmp_path / "key.pem")
    old = certificate_sha256(tmp_path / "cert.pem")
    certs = Certificates(tmp_path, now=T0 + HOUR)
    assert certs.created and certs.hashes() != [old]


async def _cert_hashes(http_port: int) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/cert-hashes") as response:
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
        return await response.json()


async def test_after_a_switch_new_connections_get_the_new_certificate_and_open_ones_play_on(
    start_server, tmp_path: Path
) -> None:
    # A certificate with 2.5 days left (the fixture serves from tmp_path/server0): the server
    # announces a successor as it starts.
    now = utc_now()
    tls = tmp_path / "server0" / "tls"
    make_certificate(tls / "cert.pem", tls / "key.pem", now - VALIDITY + 2.5 * DAY)
    old_cert = tmp_path / "old-cert.pem"
    old_cert.write_bytes((tls / "cert.pem").read_bytes())
    srv = await start_server(game_config=ARENA, metrics_port=0)
    assert srv.data_dir == tmp_path / "server0"
    old, new = srv.server.certificate_hashes()
    assert old == certificate_sha256(old_cert) and new == certificate_sha256(tls / "next-cert.pem")
    # The HTTP side tells pages both during the overlap, the one new connections get first.
    listed = await _cert_hashes(srv.server.metrics_port)
    assert listed["port"] == srv.port and listed["path"] == WEBTRANSPORT_PATH
    assert [(h["algorithm"], h["value"], h["status"]) for h in listed["hashes"]] == [
        ("sha-256", old, "current"),
        ("sha-256", new, "next"),
    ]

    async with GameClient.connect("127.0.0.1", srv.port, "early", cafile=old_cert) as early:
        await early.wait_update(timeout=2)
        srv.server.check_certificates(utc_now() + OVERLAP)  # the overlap, begun at the start, is over
        assert srv.server.certificate_hashes() == [new] == [certificate_sha256(srv.cert)]
        assert [h["value"] for h in (await _cert_hashes(srv.server.metrics_port))["hashes"]] == [new]
        with pytest.raises(ClientError):
            async with GameClient.connect("127.0.0.1", srv.port, "late", cafile=old_cert, timeout=3):
                pass
        async with GameClient.connect("127.0.0.1", srv.port, "late", cafile=srv.cert) as late:
            await late.wait_update(timeout=2)
        async with wt_client(srv.port, cafile=srv.cert) as web:
            await _join(web, "browser")
        for _ in range(5):  # the connection made before the switch plays on
            assert await early.wait_update(timeout=2), early.close_reason
            early.send_input({"mx": 1, "my": 0})
