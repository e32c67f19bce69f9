"""The HTTP protocol's time limits, driven without sockets: a request's headers or held body that stop arriving
are answered 408, a connection left idle after a shed answer is closed, and all of it with one pending check
per connection instead of a timer per request (which made a refused request cost twice as much)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_support import MODEL, REQUEST, connection, shared_artifacts, status_and_error, with_lengths

from tailor.serve.server.loadgen import infer_requests


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


def test_a_shed_request_is_answered_and_an_idle_connection_then_closed(artifacts) -> None:
    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0, keep_alive_s=0.2)
        timers: list[float] = []
        loop = protocol.loop

        class CountingLoop:
            def __getattr__(self, name: str) -> Any:
                return getattr(loop, name)

            def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
                timers.append(delay)
                return loop.call_later(delay, callback, *args)

        protocol.loop = CountingLoop()
        for _ in range(3):  # keep-alive: three refusals on one connection
            protocol.data_received(REQUEST)
        assert [status_and_error(w)[0] for w in transport.written] == [503] * 3
        assert timers == [0.2]  # one pending check for the connection, not timers per request
        assert server.metrics.rejections["admission"] == 3 and not transport.closing
        await asyncio.sleep(0.1)
        protocol.data_received(REQUEST)  # a request within the keep-alive time restarts it
        await asyncio.sleep(0.15)
        assert not transport.closing
        await asyncio.sleep(0.25)
        assert transport.closing  # idle for longer than the keep-alive time after a shed answer
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_headers_or_a_held_body_that_stop_arriving_get_a_408(artifacts) -> None:
    async def scenario() -> None:
        protocol, transport, _ = connection(artifacts, read_timeout_s=0.3)
        protocol.data_received(REQUEST)  # answered at once; the connection's check is now pending
        await asyncio.sleep(0.2)
        protocol.data_received(REQUEST[:40])  # a request that began after the check was armed
        await asyncio.sleep(0.2)  # the check fires 0.3 s after it was armed: this request is only 0.2 s old
        assert not transport.closing and len(transport.written) == 1
        await asyncio.sleep(0.2)
        assert transport.closing
        status, error = status_and_error(transport.written[-1])
        assert status == 408 and "headers did not arrive within 0.3 s" in error
        protocol.connection_lost(None)

        protocol, transport, _ = connection(artifacts, read_timeout_s=0.3)
        protocol.data_received(REQUEST[:-100])  # headers in, admission refuses: the body is held, then stalls
        await asyncio.sleep(0.45)
        assert transport.closing
        status, error = status_and_error(transport.written[-1])
        assert status == 408 and "body did not arrive within 0.3 s" in error
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_a_body_that_arrived_whole_is_marked_so_the_handler_reads_it_without_a_timer(artifacts) -> None:
    """The inference handler bounds its body read with `asyncio.timeout` (a timer per request) only when the
    body is still arriving; the protocol marks a request whose body it already has."""
    from tailor.serve.server.app import BODY_COMPLETE_KEY

    async def scenario() -> None:
        protocol, _, _ = connection(artifacts, read_timeout_s=5.0, shedding=False)
        protocol.data_received(REQUEST[:-100])
        assert BODY_COMPLETE_KEY not in protocol.scope["state"]  # handed to the handler, body still arriving
        protocol.data_received(REQUEST[-100:])
        assert protocol.scope["state"][BODY_COMPLETE_KEY] is True
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("parameters, budget", [({"deadline_ms": 40}, "40"), ({"timeout": 30_000}, "30")])
def test_a_request_with_its_own_deadline_is_shed_by_the_protocol_against_that_deadline(artifacts, parameters,
                                                                                        budget) -> None:
    """A client with a timeout sends a deadline with every request: under overload those must be refused as
    cheaply as the others (no ASGI task each), judged by their own deadline."""
    request = infer_requests(MODEL, np.zeros((1, 3, 32, 32), np.float32))[0]
    request = request.replace(b'"parameters": {', b'"parameters": {' + json.dumps(parameters)[1:-1].encode() + b", ", 1)
    request = with_lengths(request)

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        for _ in range(3):
            protocol.data_received(request)
        answers = [status_and_error(w) for w in transport.written]
        assert [status for status, _ in answers] == [503] * 3
        assert all(f"this request's deadline of {budget} ms" in error for _, error in answers)
        assert not protocol.tasks and server.metrics.rejections["admission"] == 3  # no handler ran
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_a_held_request_whose_own_deadline_is_invalid_goes_to_the_handler_for_its_400(artifacts) -> None:
    request = infer_requests(MODEL, np.zeros((1, 3, 32, 32), np.float32))[0]
    request = with_lengths(request.replace(b'"parameters": {', b'"parameters": {"deadline_ms": -5, ', 1))

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        protocol.data_received(request)
        assert not transport.written and len(protocol.tasks) == 1  # handed over, not refused
        await asyncio.gather(*protocol.tasks)
        status, error = status_and_error(b"".join(transport.written))
        assert status == 400 and "parameters.deadline_ms: expected a positive number" in error
        assert server.metrics.rejections["admission"] == 0
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_admission_is_asked_once_per_refusal_and_again_for_a_body_that_came_later(artifacts) -> None:
    """Parsed, a request is asked once (at its headers; its end in the same read does not ask again); known
    requests refused in the same pass of the event loop share one question (admission's horizon); a body that
    comes in a later read is asked again, and admitted if the queue drained meanwhile."""
    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        server.refusal_run_ms = 1e9  # however slow this machine, one pass asks once
        engine = server.engine
        asked: list[str] = []
        admits, horizon = engine.admits, engine.admission_horizon_ms

        def counting_admits(*args: Any, **kwargs: Any) -> bool:
            asked.append("admits")
            return admits(*args, **kwargs)

        def counting_horizon(*args: Any) -> float:
            asked.append("horizon")
            return horizon(*args)

        engine.admits = counting_admits  # type: ignore[method-assign]
        engine.admission_horizon_ms = counting_horizon  # type: ignore[method-assign]
        for _ in range(3):  # headers and body in one read: refused at the headers, answered at its end
            protocol.data_received(REQUEST)
        assert [status_and_error(w)[0] for w in transport.written] == [503] * 3
        assert asked == ["admits", "horizon"]  # the first parsed; the next two known, in one pass
        protocol.data_received(REQUEST[:-100])  # held: refused at its headers
        engine.reserved = 0  # the queue drained meanwhile
        protocol.data_received(REQUEST[-100:])  # asked again: admitted now, handed to the handler
        assert asked == ["admits", "horizon", "admits", "admits"]
        assert len(transport.written) == 3 and len(protocol.tasks) == 1
        assert server.metrics.rejections["admission"] == 3
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3), admitted_before_last=st.booleans())
def test_a_held_body_that_arrives_in_pieces_is_judged_on_its_whole_json_and_handed_over_whole(
        artifacts, cuts: list[float], admitted_before_last: bool) -> None:
    """The protocol keeps a held body as the chunks the parser gave (no copy): however the bytes are cut, a
    request refused at its end is judged by the deadline its JSON part sets (even when that part spans reads),
    and one admitted at its end reaches the handler with every byte of its body, in order."""
    request = infer_requests(MODEL, np.arange(3 * 32 * 32, dtype=np.float32).reshape(1, 3, 32, 32))[0]
    request = with_lengths(request.replace(b'"parameters": {', b'"parameters": {"deadline_ms": 40, ', 1))
    body = request.partition(b"\r\n\r\n")[2]
    positions = sorted({1 + int(c * (len(request) - 2)) for c in cuts})
    pieces = [request[a:b] for a, b in zip([0, *positions], [*positions, len(request)])]

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        for piece in pieces[:-1]:
            protocol.data_received(piece)
        if admitted_before_last:
            server.engine.reserved = 0  # the queue drained before the rest arrived
        protocol.data_received(pieces[-1])
        if admitted_before_last:
            assert not transport.written and len(protocol.tasks) == 1
            assert protocol.cycle.body == body and not protocol.cycle.more_body
        else:
            status, error = status_and_error(b"".join(transport.written))
            assert status == 503 and "this request's deadline of 40 ms" in error and not protocol.tasks
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("deadline_after_done_ms, on_time", [(1e6, True), (0.5, False)])
def test_an_answer_on_time_at_its_batchs_end_but_written_after_its_deadline_is_late(
        artifacts, deadline_after_done_ms: float, on_time: bool) -> None:
    """The engine judges a request when its batch finishes; its handler may resume later on a busy event loop.
    An answer written after the deadline says `on_time: false` and is counted late in /metrics, not on time."""
    from tailor.serve.server.scheduler import Served, monotonic_ms

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0, shedding=False)

        async def submit(inputs: np.ndarray, deadline_ms: float | None = None, arrival_ms: float | None = None,
                         reserved_behind: int = 0) -> Served:
            assert arrival_ms is not None
            await asyncio.sleep(0.005)
            done = monotonic_ms()
            server.metrics.outcome("on_time", (done - arrival_ms) / 1e3)  # as the engine counts it
            await asyncio.sleep(0.005)  # the handler resumes 5 ms after the batch ended
            return Served(np.zeros((1, 10), np.float32), "small", 0.9, 1, 0.1, 1.0, True,
                          done + deadline_after_done_ms, done, 0, 0)

        server.engine.submit = submit  # type: ignore[method-assign]
        protocol.data_received(REQUEST)
        await asyncio.gather(*protocol.tasks)
        head, _, body = b"".join(transport.written).partition(b"\r\n\r\n")
        assert int(head.split()[1]) == 200
        header_length = int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:]).get(
            b"inference-header-content-length", len(body)))
        assert json.loads(body[:header_length])["parameters"]["on_time"] is on_time
        counts = server.metrics.counts
        assert (counts["on_time"], counts["late"]) == ((1, 0) if on_time else (0, 1))
        protocol.connection_lost(None)

    asyncio.run(scenario())
