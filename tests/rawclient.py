"""A bare QUIC client for tests that must send what the SDK never would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.events import ConnectionTerminated, DatagramFrameReceived, QuicEvent, StreamDataReceived

from tickline.bots.client import client_configuration
from tickline.shared.protocol import Frame, StreamDecoder, decode_datagram


class RawClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decoder = StreamDecoder()
        self.frames: list[Frame] = []
        self.datagrams: list[Frame] = []
        self.terminated: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.stream_id = self._quic.get_next_available_stream_id()
        self.got_frame = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.frames.extend(self.decoder.feed(event.data))
            self.got_frame.set()
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams.append(decode_datagram(event.data))
        elif isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event.reason_phrase)

    def send_stream(self, data: bytes) -> None:
        self._quic.send_stream_data(self.stream_id, data)
        self.transmit()

    def send_datagram(self, data: bytes) -> None:
        self._quic.send_datagram_frame(data)
        self.transmit()

    async def closed_reason(self, timeout: float = 5.0) -> str:
        return await asyncio.wait_for(asyncio.shield(self.terminated), timeout)

    async def next_frame(self, timeout: float = 5.0) -> Frame:
        async with asyncio.timeout(timeout):
            while not self.frames:
                self.got_frame.clear()
                await self.got_frame.wait()
        return self.frames.pop(0)


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    config = client_configuration()
    async with connect("127.0.0.1", port, configuration=config, create_protocol=RawClient) as client:
        assert isinstance(client, RawClient)
        yield client
