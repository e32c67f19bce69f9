"""`benchmarks/refusal_floor.py`: its bare protocol must answer each request exactly once however the bytes arrive
(or the floor it measures would be per read, not per request), perf's report must be grouped right, and a burst's
share of the core follows from C and the cost."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve.server.loadgen import http_request

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def floor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refusal_floor", ROOT / "benchmarks" / "refusal_floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def feed(floor: ModuleType, stream: bytes, cuts: list[int]) -> tuple[RecordingTransport, object]:
    protocol = floor.FloorProtocol()
    transport = RecordingTransport()
    protocol.connection_made(transport)
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
    for lo, hi in itertools.pairwise(edges):
        protocol.data_received(stream[lo:hi])
    return transport, protocol


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=12))
def test_every_request_is_answered_once_however_its_bytes_are_split(floor: ModuleType, bodies: list[bytes],
                                                                   cuts: list[int]) -> None:
    stream = b"".join(http_request("/v2/models/m/infer", body, {"X-Seq": str(i)}) for i, body in enumerate(bodies))
    transport, protocol = feed(floor, stream, cuts)
    assert transport.written == [floor.FLOOR_ANSWER] * len(bodies)
    assert not transport.closed and protocol.answered == len(bodies)  # type: ignore[attr-defined]


def test_a_request_is_not_answered_before_its_body_is_read(floor: ModuleType) -> None:
    request = http_request("/x", b"a" * 100, {})
    transport, _ = feed(floor, request[:-1], [])
    assert transport.written == []
    transport, _ = feed(floor, request, [len(request) - 1])
    assert transport.written == [floor.FLOOR_ANSWER]


def test_unframed_requests_close_the_connection(floor: ModuleType) -> None:
    transport, _ = feed(floor, b"POST /x HTTP/1.1\r\nHost: a\r\n\r\nbody", [])
    assert transport.closed and transport.written == []
    transport, _ = feed(floor, b"POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\nb", [])
    assert transport.closed and transport.written == []
    transport, _ = feed(floor, b"POST /x HTTP/1.1\r\nX: " + b"a" * 20000, [])  # headers past 16 KiB, no end
    assert transport.closed


def test_the_answer_is_a_counted_style_json_503_with_retry_after(floor: ModuleType) -> None:
    head, _, body = floor.FLOOR_ANSWER.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(fields["content-length"]) == len(body) and fields["retry-after"] == "1"
    assert "error" in json.loads(body)


def test_the_floor_server_answers_over_tcp(floor: ModuleType) -> None:
    async def exchange() -> bytes:
        server = await asyncio.get_running_loop().create_server(floor.FloorProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = http_request("/v2/models/m/infer", b"{}", {})
        writer.write(request + request)
        await writer.drain()
        data = b""
        while data.count(b"HTTP/1.1 503") < 2:
            data += await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        server.close()
        return data

    assert asyncio.run(exchange()) == floor.FLOOR_ANSWER * 2


def test_perf_report_is_grouped_by_where_the_time_went(floor: ModuleType) -> None:
    report = """# Samples: 5K of event 'cpu-clock'
#
    54.95%  [kernel.kallsyms]
    34.99%  libpython3.11.so.1.0
     5.28%  loop.cpython-311-x86_64-linux-gnu.so
     3.35%  libc.so.6
     1.07%  [vdso]
     0.25%  _bisect.cpython-311-x86_64-linux-gnu.so
"""
    groups = floor.group_dsos(report)
    assert groups == pytest.approx({"kernel": 54.95, "cpython": 34.99, "uvloop": 5.28, "libc": 3.35, "other": 1.32})


def test_a_bursts_refusals_take_their_share_of_the_core(floor: ModuleType) -> None:
    assert floor.refusal_bound(3000.0, 10.0, 8.3e-6) == pytest.approx(9 * 3000 * 8.3e-6)
    assert floor.refusal_bound(3000.0, 1.0, 8.3e-6) == 0.0


@pytest.mark.parametrize("into_next", [1, 2, 4, 30])
def test_a_read_ending_inside_the_next_request_keeps_its_first_bytes(floor: ModuleType, into_next: int) -> None:
    first, second = http_request("/x", b"a" * 10, {}), http_request("/x", b"b" * 10, {})
    transport, _ = feed(floor, first + second, [len(first) + into_next])
    assert transport.written == [floor.FLOOR_ANSWER] * 2
