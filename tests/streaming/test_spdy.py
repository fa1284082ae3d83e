"""SPDY/3.1 framing, header compression and the connection state machine, over a
local socket pair (no host state touched)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from kubenode.streaming import spdy
from kubenode.streaming.spdy import (
    DataFrame,
    FrameCodec,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    SpdyConnection,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
)


def test_dictionary_is_the_spdy3_one() -> None:
    d = spdy.SPDY3_DICTIONARY
    assert len(d) == 1423
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert d.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    # the name/value block part is length-prefixed words up to "origin"
    pos, words = 0, []
    while True:
        (n,) = struct.unpack_from(">I", d, pos)
        if n > 64:
            break
        words.append(d[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    assert words[-1] == "origin" and "200 OK" in words and len(words) == 65


ALL_FRAMES: list[spdy.Frame] = [
    DataFrame(stream_id=1, data=b"hello", fin=False),
    DataFrame(stream_id=0x7FFFFFFF, data=b"", fin=True),
    SynStreamFrame(stream_id=3, headers={"streamtype": "stdin", "port": "80"}, priority=2,
                   fin=True, unidirectional=True, associated_to=1),
    SynReplyFrame(stream_id=3, headers={}, fin=False),
    HeadersFrame(stream_id=5, headers={"a": "b\x00c"}, fin=True),
    RstStreamFrame(stream_id=7, status=spdy.CANCEL),
    SettingsFrame(settings={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, 4: 100}),
    PingFrame(ping_id=0xFFFFFFFF),
    GoAwayFrame(last_good_stream_id=9, status=1),
    WindowUpdateFrame(stream_id=1, delta=65536),
]


def test_every_frame_round_trips_even_fed_byte_by_byte() -> None:
    tx, rx = FrameCodec(), FrameCodec()
    wire = b"".join(tx.encode(f) for f in ALL_FRAMES)
    got: list[spdy.Frame] = []
    for i in range(len(wire)):
        got += rx.feed(wire[i:i + 1])
    assert got == ALL_FRAMES


def test_exact_bytes_of_simple_frames() -> None:
    c = FrameCodec()
    assert c.encode(PingFrame(ping_id=1)) == bytes.fromhex("80030006 00000004 00000001")
    assert c.encode(DataFrame(stream_id=1, data=b"abc", fin=True)) == bytes.fromhex(
        "00000001 01000003 616263")
    assert c.encode(RstStreamFrame(stream_id=3, status=5)) == bytes.fromhex(
        "80030003 00000008 00000003 00000005")
    assert c.encode(GoAwayFrame(last_good_stream_id=2)) == bytes.fromhex(
        "80030007 00000008 00000002 00000000")
    assert c.encode(WindowUpdateFrame(stream_id=1, delta=10)) == bytes.fromhex(
        "80030009 00000008 00000001 0000000a")


def test_header_blocks_use_one_zlib_stream_with_the_dictionary() -> None:
    c = FrameCodec()
    headers = {"streamtype": "error", "port": "8080", "requestid": "0"}
    first = c.encode(SynStreamFrame(stream_id=1, headers=headers))
    second = c.encode(SynStreamFrame(stream_id=3, headers=headers))
    assert len(second) < len(first)  # the second block refers back to the first
    block = first[18:]  # 8 header + 10 SYN_STREAM fields
    with pytest.raises(zlib.error):  # needs the dictionary
        zlib.decompressobj().decompress(block)
    raw = zlib.decompressobj(zdict=spdy.SPDY3_DICTIONARY).decompress(block)
    assert raw == spdy.encode_header_block(headers)
    assert spdy.decode_header_block(raw) == headers
    # a decoder that missed the first block cannot decode the second one
    fresh = FrameCodec()
    with pytest.raises(spdy.ProtocolError):
        fresh.feed(second)


def test_malformed_input_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError, match="version"):
        FrameCodec().feed(bytes.fromhex("80020006 00000004 00000001"))
    with pytest.raises(spdy.ProtocolError):
        spdy.decode_header_block(b"\x00\x00\x00\x02\x00\x00\x00\x05ab")
    # unknown control frame types are skipped
    assert FrameCodec().feed(bytes.fromhex("8003000a 00000002 abcd")) == []


@dataclass
class Pair:
    client: SpdyConnection
    server: SpdyConnection
    tasks: list[asyncio.Task[None]]
    writers: list[asyncio.StreamWriter]


async def _pump(reader: asyncio.StreamReader, conn: SpdyConnection) -> None:
    while data := await reader.read(65536):
        conn.data_received(data)
    conn.connection_lost(None)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    client, server = SpdyConnection(wa, server=False), SpdyConnection(wb, server=True)
    tasks = [asyncio.create_task(_pump(ra, client)), asyncio.create_task(_pump(rb, server))]
    p = Pair(client, server, tasks, [wa, wb])
    try:
        yield p
    finally:
        for t in tasks:
            t.cancel()
        for w in (wa, wb):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def test_streams_data_fin_and_reply(pair: Pair) -> None:
    opened = asyncio.create_task(pair.client.open_stream({"streamtype": "stdin"}))
    peer = await pair.server.accept()
    cs = await opened
    assert peer is not None and peer.id == cs.id == 1
    assert peer.headers == {"streamtype": "stdin"}
    await cs.write(b"ping")
    await cs.close()
    assert await peer.read() == b"ping"  # read() to EOF: FIN arrived
    await peer.write(b"pong")
    await peer.close()
    assert await cs.read() == b"pong"
    assert cs.id not in pair.client.streams  # both sides closed: forgotten
    with pytest.raises(BrokenPipeError):
        await cs.write(b"more")
    s2 = await pair.client.open_stream({"streamtype": "stdout"})
    assert s2.id == 3


async def test_rst_stream_ends_both_sides(pair: Pair) -> None:
    opened = asyncio.create_task(pair.client.open_stream({"x": "1"}))
    peer = await pair.server.accept()
    cs = await opened
    assert peer is not None
    peer.reset()
    assert await cs.read() == b""
    await asyncio.sleep(0.01)
    assert cs.was_reset
    with pytest.raises(spdy.StreamReset):
        await cs.write(b"x")


async def test_ping_round_trip_both_ways(pair: Pair) -> None:
    assert await pair.client.ping() >= 0
    assert await pair.server.ping() >= 0


async def test_window_update_sent_for_received_data(pair: Pair) -> None:
    opened = asyncio.create_task(pair.client.open_stream({}))
    peer = await pair.server.accept()
    cs = await opened
    assert peer is not None
    before = peer.send_window
    await cs.write(b"x" * 100_000)
    got = await peer.reader.readexactly(100_000)
    assert got == b"x" * 100_000
    await asyncio.sleep(0.05)
    # the receiver acknowledged at least 64 KiB for the stream and the session
    assert cs.send_window >= before - 100_000 + 65536
    assert pair.client.session_send_window >= spdy.DEFAULT_WINDOW - 100_000 + 65536


async def test_goaway_refuses_new_streams(pair: Pair) -> None:
    await pair.server.close()
    await asyncio.sleep(0.01)
    assert pair.client.going_away or pair.client.closed
    with pytest.raises(ConnectionResetError):
        await pair.client.open_stream({})


async def test_settings_change_send_windows(pair: Pair) -> None:
    opened = asyncio.create_task(pair.client.open_stream({}))
    await pair.server.accept()
    cs = await opened
    pair.server.send(SettingsFrame(settings={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}))
    await pair.server.drain()
    await asyncio.sleep(0.01)
    assert pair.client.peer_initial_window == 1 << 20
    assert cs.send_window == 1 << 20
