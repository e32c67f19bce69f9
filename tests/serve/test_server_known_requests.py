"""Refusing a request without parsing it: a read that holds one whole request whose header block is byte for byte
one the HTTP parser has read before (the same client sending again) is refused by the protocol from the raw bytes
when admission refuses it. It must answer exactly what the parser's path answers, and take nothing else."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_server_support import MODEL, REQUEST, connection, shared_artifacts, status_and_error, with_lengths

from tailor.serve.queue import Request
from tailor.serve.server.loadgen import infer_requests
from tailor.serve.server.protocol import ModelSpec, TensorSpec
from tailor.serve.server.scheduler import Job, monotonic_ms


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return shared_artifacts(tmp_path_factory)


class CountingParser:
    """The protocol's HTTP parser, counting the reads it is given."""

    def __init__(self, parser: Any) -> None:
        self.parser, self.reads = parser, 0

    def feed_data(self, data: bytes) -> None:
        self.reads += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


def record_calls(owner: Any, name: str, argument: int = 0) -> list[Any]:
    """Wrap the method `name` of `owner` (the instance's attribute) so that each call records its positional
    argument number `argument`; the record is returned."""
    calls: list[Any] = []
    original = getattr(owner, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[argument])
        return original(*args, **kwargs)

    setattr(owner, name, recording)
    return calls


def _same_length(request: bytes, parameters: bytes) -> bytes:
    """`request` with its JSON's parameters replaced by `parameters`, padded with spaces to the same length: the
    header block (Content-Length, Inference-Header-Content-Length) stays byte for byte the same."""
    head, _, body = request.partition(b"\r\n\r\n")
    old = b'"parameters": {"binary_data_output": true}'
    new = b'"parameters": ' + parameters
    assert old in body and len(new) <= len(old)
    return head + b"\r\n\r\n" + body.replace(old, new + b" " * (len(old) - len(new)), 1)


def test_a_request_seen_before_is_refused_without_the_parser_with_the_same_answer(artifacts) -> None:
    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        parser = protocol.parser = CountingParser(protocol.parser)
        for _ in range(4):
            protocol.data_received(REQUEST)
        assert parser.reads == 1  # only the first: its header block is known from then on
        assert len(transport.written) == 4 and len(set(transport.written)) == 1  # one answer, byte for byte
        status, error = status_and_error(transport.written[0])
        assert status == 503 and "cannot be drained within the deadline of 50 ms" in error
        assert server.metrics.rejections["admission"] == 4 and server.metrics.counts["rejected"] == 4
        assert protocol.server_state.total_requests == 4 and not protocol.tasks and not transport.closing
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_a_known_request_that_admission_takes_reaches_the_handler_whole(artifacts) -> None:
    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        protocol.data_received(REQUEST)  # refused, and now known
        server.engine.reserved = 0  # the queue drained
        protocol.data_received(REQUEST)
        assert len(transport.written) == 1 and len(protocol.tasks) == 1
        assert protocol.cycle.body == REQUEST.partition(b"\r\n\r\n")[2] and not protocol.cycle.more_body
        assert server.engine.reserved == 1  # it holds its place in admission, as on the parser's path
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("parameters, handed_over", [
    (b'{"deadline_ms": 1e9}', True),  # its own deadline is far: admitted, whatever the default deadline says
    (b'{"timeout": 40000}', False),  # Triton's timeout (us), 40 ms: refused against it, by the parser's path
    (b'{"deadline_ms": -1}', True),  # invalid: the handler answers 400 naming it
])
def test_a_request_with_known_headers_that_sets_its_own_deadline_is_judged_by_it(
        artifacts, parameters: bytes, handed_over: bool) -> None:
    """Same header block, same length, but the JSON sets a deadline: never refused from the raw bytes."""
    own = _same_length(REQUEST, parameters)

    async def scenario() -> None:
        protocol, transport, _ = connection(artifacts, read_timeout_s=5.0)
        parser = protocol.parser = CountingParser(protocol.parser)
        protocol.data_received(REQUEST)  # known from now on
        protocol.data_received(own)
        assert parser.reads == 2
        if handed_over:
            assert len(transport.written) == 1 and len(protocol.tasks) == 1
            await asyncio.gather(*protocol.tasks, return_exceptions=True)
        else:
            status, error = status_and_error(transport.written[-1])
            assert status == 503 and "this request's deadline of 40 ms" in error
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("variant", ["http10", "close"])
def test_a_request_whose_answer_closes_the_connection_is_never_answered_from_its_bytes(artifacts, variant) -> None:
    """HTTP/1.0 or `Connection: close`: the refusal says `connection: close` and closes, on every connection."""
    request = VARIANTS[variant]

    async def scenario() -> None:
        server = None
        for _ in range(2):  # the second connection sends a header block the server has read before
            protocol, transport, server = connection(artifacts, read_timeout_s=5.0, server=server)
            parser = protocol.parser = CountingParser(protocol.parser)
            protocol.data_received(request)
            assert parser.reads == 1 and transport.closing
            assert b"\r\nconnection: close\r\n" in transport.written[0].lower()
            assert status_and_error(transport.written[0])[0] == 503
            protocol.connection_lost(None)

    asyncio.run(scenario())


def test_known_header_blocks_are_bounded_and_forgotten_for_another_model(artifacts) -> None:
    async def scenario() -> None:
        protocol, _, server = connection(artifacts, read_timeout_s=5.0)
        protocol.data_received(REQUEST)
        block = REQUEST[:REQUEST.index(b"\r\n\r\n") + 4]
        assert server.known_request(block) is not None
        for n in range(64):  # a client that never sends the same headers twice keeps at most 64
            server.remember_request(block + b"x-%d" % n, 1, None)
        assert len(server._known_requests) <= 64
        server.remember_request(block, 7, 3)
        assert server.known_request(block) == (7, 3)
        server.spec = ModelSpec("another", TensorSpec("input", "FP32", (-1, 3, 32, 32)),
                                TensorSpec("logits", "FP32", (-1, 10)), 8)
        assert server.known_request(block) is None  # its path belonged to the model served before
        protocol.connection_lost(None)

    asyncio.run(scenario())


class HeldAnswers:
    """An ASGI app that reads a request's body and answers 200 with its length, but only once `release` is set:
    a request handed over stays unanswered until the test lets it go (what follows it on the connection then
    waits, as behind a slow handler)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        length, more = 0, True
        while more:
            message = await receive()
            length, more = length + len(message.get("body", b"")), message.get("more_body", False)
        await self.release.wait()
        text = str(length).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(text))]})
        await send({"type": "http.response.body", "body": text})


def _variants() -> dict[str, bytes]:
    """Requests a client may send on one connection: the known one, its header block changed, another framing,
    its own deadline, another path, HTTP/1.0, a non-keep-alive one."""
    plain = REQUEST
    head, _, body = plain.partition(b"\r\n\r\n")
    chunked_head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length"))
    chunked = chunked_head + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    other = infer_requests(MODEL, np.ones((2, 3, 32, 32), np.float32))[0]
    return {
        "plain": plain,
        "host": plain.replace(b"Host: tailor", b"Host: tailor2", 1),
        "chunked": chunked,
        "own_deadline": with_lengths(plain.replace(b'"parameters": {', b'"parameters": {"deadline_ms": 40, ', 1)),
        "batch_of_2": other,
        "wrong_path": plain.replace(b"/infer ", b"/inferx ", 1),
        "http10": plain.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        "close": plain.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1),
    }


VARIANTS = _variants()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(sends=[("plain", 0, False, False, False), ("wrong_path", 0, False, False, False),
                ("plain", 0, False, True, False)])
@example(sends=[("plain", 0, False, False, True)] * 4 + [("own_deadline", 0, False, False, True),
                                                         ("plain", 0, True, False, True), ("plain", 1, False, True, True)])
@given(sends=st.lists(st.tuples(st.sampled_from(sorted(VARIANTS)), st.integers(0, 2), st.booleans(), st.booleans(),
                                st.booleans()), min_size=1, max_size=12))
def test_answers_and_counts_are_those_of_the_parsers_path(artifacts, sends: list[tuple[str, int, bool, bool, bool]]
                                                          ) -> None:
    """The same reads on two connections, one whose server never knows a request (every read parsed): the same
    bytes written (refusals, and the answers of what was handed to the handler), the same counts. A send is a
    request, cut into `cut + 1` reads (the first cut right after the headers' end, the second mid-body), or two
    requests in one read (pipelined); after it the handlers answer what they hold (`answer`) or keep holding it.
    With `same_pass` the next send's reads follow in the same pass of the event loop (no handler runs between):
    there the protocol answers repeats of a refused request from the pass's run."""

    def reads(name: str, cut: int, pipelined: bool) -> list[bytes]:
        request = VARIANTS[name]
        if pipelined:
            return [request + VARIANTS["plain"]]
        header_end = request.index(b"\r\n\r\n") + 4
        points = [0, header_end, (header_end + len(request)) // 2][: cut + 1] + [len(request)]
        return [request[a:b] for a, b in itertools.pairwise(points) if b > a]

    async def answer_held(protocol: Any, app: HeldAnswers) -> None:
        app.release.set()
        for _ in range(1000):  # a handler answers; the next request in uvicorn's pipeline starts, and answers too
            if not protocol.tasks:
                break
            await asyncio.sleep(0)
        assert not protocol.tasks
        app.release.clear()

    async def run(parse_all: bool) -> tuple[list[bytes], dict, dict, int, bool]:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        if parse_all:
            server.known_request = lambda block: None  # type: ignore[method-assign]
        app = protocol.app = HeldAnswers()
        for name, cut, pipelined, answer, same_pass in sends:
            for data in reads(name, cut, pipelined):
                if not transport.closing:
                    protocol.data_received(data)
                    for _ in range(0 if same_pass else 5):  # the handlers of what was handed over read their bodies
                        await asyncio.sleep(0)
            if answer:
                await answer_held(protocol, app)
        await answer_held(protocol, app)
        result = (transport.written, dict(server.metrics.rejections), dict(server.metrics.counts),
                  protocol.server_state.total_requests, transport.closing)
        protocol.connection_lost(None)
        return result

    async def both() -> None:
        fast, parsed = await run(parse_all=False), await run(parse_all=True)
        assert fast == parsed

    asyncio.run(both())


def test_the_handler_does_not_count_requests_read_after_its_own_against_it(artifacts) -> None:
    """The protocol admits a request and holds its place; before its handler runs, the loop reads many more that
    the protocol also admits (their places held). The handler's own check must not count those (they queue
    behind it): counted, they refused in the handler what the protocol had admitted, each after a full ASGI
    cycle."""
    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0, shedding=False)
        server.engine._loop = asyncio.get_running_loop()  # the engine's loop, no workers: a request queued stays
        protocol.data_received(REQUEST)
        assert len(protocol.tasks) == 1 and server.engine.reserved == 1
        for _ in range(100_000):  # requests read after it, in the same pass of the loop
            server.engine.reserve()
        for _ in range(20):
            await asyncio.sleep(0)
        assert transport.written == []  # not refused: it waits in the queue for its batch
        assert server.scheduler.queued_samples == 1 and server.engine.reserved == 100_000
        assert server.metrics.handler_rejections == 0
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("own_deadline", [False, True])
def test_a_request_refused_in_its_handler_is_counted_there(artifacts, own_deadline: bool) -> None:
    """Admitted by the protocol at its headers, refused by its handler because its deadline passed before the
    handler ran (the loop 60 ms late): a 503 counted as an admission rejection and, in /metrics, as one made in
    the handler (`tailor_handler_rejections_total`); a refusal by the protocol is not counted there. With a
    deadline of its own (50 ms) the handler's check before parsing is skipped and `Engine.submit` refuses it."""
    request = _same_length(REQUEST, b'{"deadline_ms": 50}') if own_deadline else REQUEST

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0, shedding=False)
        server.engine._loop = asyncio.get_running_loop()
        protocol.data_received(request)
        assert len(protocol.tasks) == 1 and transport.written == []
        server.engine.clock = lambda: monotonic_ms() + 60.0  # its handler runs 60 ms after it arrived
        for _ in range(20):
            await asyncio.sleep(0)
        assert status_and_error(b"".join(transport.written))[0] == 503 and server.scheduler.queued_samples == 0
        assert server.metrics.handler_rejections == 1 and server.metrics.rejections["admission"] == 1
        assert "tailor_handler_rejections_total 1.0" in server.metrics.render().decode()
        server.engine.reserved = 100_000  # refused at the protocol from now on
        protocol.data_received(REQUEST)
        assert server.metrics.handler_rejections == 1 and server.metrics.rejections["admission"] == 2
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_known_requests_refused_in_one_pass_of_the_loop_ask_admission_once(artifacts) -> None:
    """A burst's refusals read in one pass of the event loop share one question to admission (its horizon) and
    one answer; each is still counted, and the next pass asks again."""

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        server.refusal_run_ms = 1e9  # however slow this machine, the pass decides (the window: the engine's test)
        asked = record_calls(server.engine, "admission_horizon_ms")
        protocol.data_received(REQUEST)  # parsed: known from now on
        for _ in range(4):
            protocol.data_received(REQUEST)
        assert len(asked) == 1 and len(transport.written) == 5 and len(set(transport.written[1:])) == 1
        assert server.metrics.rejections["admission"] == 5 and server.metrics.counts["rejected"] == 5
        await asyncio.sleep(0)  # the pass ends
        protocol.data_received(REQUEST)
        assert len(asked) == 2 and server.metrics.rejections["admission"] == 6
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("seen_by", ["the executor's report", "places given back", "the queue drained",
                                     "the end of the pass"])
def test_admission_that_turns_lenient_within_a_pass_is_seen_by_the_next_known_request(artifacts, seen_by) -> None:
    """Within a pass only a worker's change of state (reported by the executor) or a shrinking queue or count
    of places can make admission more lenient: a report makes the next known request be asked afresh; anything
    else is seen once the pass ends."""

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        server.refusal_run_ms = 1e9  # however slow this machine, the pass decides (the window: the engine's test)
        places = 100_000
        if seen_by == "the queue drained":  # queued requests instead of held places make admission refuse
            server.engine.reserved = places = 0
            now = monotonic_ms()
            samples = np.broadcast_to(np.zeros((1, 3, 32, 32), np.float32), (10_000, 3, 32, 32))  # no copy
            for rid in range(10):
                server.scheduler.admit(Request(rid, now, now + 1e9, Job(samples, None, now)))
        for _ in range(2):  # the second is refused from its bytes: admission's horizon is kept for the pass
            protocol.data_received(REQUEST)
        assert len(transport.written) == 2
        if seen_by == "places given back":  # the handlers of the requests holding them queued them
            server.engine.reserved = places = 0
        elif seen_by == "the queue drained":  # the workers took them
            server.scheduler.pop_all()
        else:
            server.scheduler.fastest_ms_per_sample = 1e-9  # the held places now drain at once
        if seen_by == "the executor's report":
            server.pool.on_change()
        elif seen_by == "the end of the pass":
            protocol.data_received(REQUEST)  # the same pass, nothing reported: the kept horizon still refuses
            assert len(transport.written) == 3
            await asyncio.sleep(0)
        protocol.data_received(REQUEST)
        assert len(protocol.tasks) == 1 and server.engine.reserved == places + 1  # admitted, holding its place
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("change", ["a request due after the horizon", "the run past its time", "draining",
                                    "too many connections"])
def test_a_repeat_within_a_pass_is_answered_from_the_run_only_while_refusal_would_be(artifacts, change) -> None:
    """Once a pass has refused a known request from its bytes, a read that repeats it (same length, same headers
    and JSON part) is refused at the top of `data_received` (`InferenceServer.refuses_repeat`), without the
    checks in between, but only while `refusal` would answer it from the pass's horizon: a repeat due at or
    after the horizon is asked in full (and admitted here), a run past its time is taken again, a server that
    stops accepting or has too many connections answers as it always does."""

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        server.refusal_run_ms = 1e9  # however slow this machine, the pass decides
        engine = server.engine
        engine._loop = asyncio.get_running_loop()  # the engine's loop, no workers: a request queued stays
        asked = record_calls(engine, "admission_horizon_ms")
        refused_from_bytes = record_calls(protocol, "_refuse_known", argument=1)
        for _ in range(4):  # parsed; refused from its bytes (the run takes its shape); twice refused as a repeat
            protocol.data_received(REQUEST)
        assert len(refused_from_bytes) == 1 and len(asked) == 1
        assert len(set(transport.written)) == 1 and len(transport.written) == 4
        assert server.metrics.rejections["admission"] == 4 and server.metrics.counts["rejected"] == 4
        assert protocol.server_state.total_requests == 4 and server.scheduler.queue.total_refused == 4
        run = server.refusal_run
        assert run is not None and run.read_length == len(REQUEST) and REQUEST.startswith(run.prefix)
        if change == "a request due after the horizon":  # it reached the socket just after the run's latest arrival
            server.loop_lag.lag_ms = monotonic_ms() - (run.horizon_ms - server.config.slo_ms) - 1.0
        elif change == "the run past its time":
            run.until_ms = monotonic_ms() - 1.0
        elif change == "draining":
            engine.accepting = False
        else:
            server.config.max_connections = 0
        protocol.data_received(REQUEST)
        for _ in range(10):
            await asyncio.sleep(0)
        if change == "a request due after the horizon":
            assert len(protocol.tasks) == 1 and server.scheduler.queued_samples == 1  # admitted: queued
            assert server.metrics.rejections["admission"] == 4
        elif change == "the run past its time":
            assert len(asked) == 2 and server.metrics.rejections["admission"] == 5  # refused by a new run
        elif change == "draining":
            assert server.metrics.rejections["not_accepting"] == 1 and server.metrics.rejections["admission"] == 4
            assert status_and_error(b"".join(transport.written[4:]))[0] == 503
        else:
            assert server.metrics.rejections["connections"] == 1 and transport.closing
        for task in list(protocol.tasks):
            task.cancel()
        protocol.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("lookalike", ["two requests in one read", "its own deadline, same length",
                                       "a body that is a request", "a held body that is a request",
                                       "an answer still owed"])
def test_a_read_that_only_looks_like_a_repeat_is_not_answered_as_one(artifacts, lookalike) -> None:
    """Within a pass that refused a known request, reads that begin with its bytes but are not one whole repeat
    of it between messages with nothing owed on the connection go the usual way: two pipelined requests get two
    answers; the same header block with a deadline of its own in a JSON part of the same length is judged by
    that deadline (admitted here); a request whose body is byte for byte a known request gets one answer, the
    body read as a body, also where the protocol holds the body of a request it refused at its headers (no
    handler started); a connection still owing an answer answers in order."""

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        server.refusal_run_ms = 1e9  # however slow this machine, the pass decides
        server.engine._loop = asyncio.get_running_loop()  # no workers: a request queued stays
        app = HeldAnswers()  # answers what it is handed only once released
        if lookalike in ("an answer still owed", "a body that is a request"):
            protocol.app = app
        other, other_transport, _ = connection(artifacts, read_timeout_s=5.0, server=server)
        if lookalike == "an answer still owed":  # on this connection: admitted by its own deadline, unanswered
            server.engine.reserved = 0
            protocol.data_received(_same_length(REQUEST, b'{"deadline_ms": 1e9}'))
            for _ in range(10):
                await asyncio.sleep(0)
            assert len(protocol.tasks) == 1 and transport.written == []
            server.engine.reserved = 100_000
        for _ in range(3):  # another connection: parsed, refused from its bytes, refused as a repeat
            other.data_received(REQUEST)
        assert len(other_transport.written) == 3 and server.refusal_run.read_length == len(REQUEST)
        written = len(transport.written)
        if lookalike == "two requests in one read":
            protocol.data_received(REQUEST + REQUEST)
            assert len(transport.written) == written + 2 and protocol.server_state.total_requests == 2
        elif lookalike == "its own deadline, same length":
            protocol.data_received(_same_length(REQUEST, b'{"deadline_ms": 1e9}'))
            for _ in range(10):
                await asyncio.sleep(0)
            assert transport.written == [] and server.scheduler.queued_samples == 1  # admitted, queued
        elif lookalike == "a held body that is a request":  # refused at its headers: its body is held, not parsed
            head = REQUEST.partition(b"\r\n\r\n")[0]
            head = b"\r\n".join(line for line in head.split(b"\r\n")
                                 if not line.lower().startswith((b"content-length", b"inference-header")))
            protocol.data_received(head + b"\r\nContent-Length: %d\r\n\r\n" % len(REQUEST))
            assert not protocol._between_messages and protocol.cycle is None
            protocol.data_received(REQUEST)  # its body
            assert protocol._between_messages and len(transport.written) == 1  # its 503, the body read whole
            assert server.metrics.rejections["admission"] == 4
        elif lookalike == "a body that is a request":
            head = REQUEST.partition(b"\r\n\r\n")[0].replace(b"/infer ", b"/inferx ", 1)
            head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length"))
            protocol.data_received(head + b"\r\nContent-Length: %d\r\n\r\n" % len(REQUEST))
            protocol.data_received(REQUEST)  # the first request's body, not a request
            app.release.set()
            for _ in range(20):
                await asyncio.sleep(0)
            answers = b"".join(transport.written)  # one answer, from the app that read the whole body
            assert answers.count(b"HTTP/1.1 ") == 1 and answers.endswith(b"\r\n\r\n%d" % len(REQUEST))
            assert server.metrics.rejections["admission"] == 3
        else:  # the unanswered request first, then the repeat's 503, in order
            protocol.data_received(REQUEST)
            assert len(transport.written) == 0
            app.release.set()
            for _ in range(20):
                await asyncio.sleep(0)
            answers = b"".join(transport.written)  # this app answers the pipelined request too, after the first
            assert answers.startswith(b"HTTP/1.1 200") and answers.count(b"HTTP/1.1 ") == 2
        for connection_ in (protocol, other):
            for task in list(connection_.tasks):
                task.cancel()
            connection_.connection_lost(None)

    asyncio.run(scenario())


@pytest.mark.parametrize("grown", ["places taken", "requests queued"])
def test_places_taken_within_a_pass_move_the_kept_horizon_instead_of_asking_in_full(artifacts, grown) -> None:
    """Under a burst a request admitted at the horizon takes a place, which moves the horizon later; the requests
    read after it in the same pass fall between the kept horizon and the new one. They are refused by the horizon
    taken again, not each asked in full (half of a burst's refusals were full questions before)."""

    async def scenario() -> None:
        protocol, transport, server = connection(artifacts, read_timeout_s=5.0)
        server.refusal_run_ms = 1e9  # however slow this machine, the pass decides
        engine = server.engine
        full = record_calls(server, "shed_response")
        protocol.data_received(REQUEST)  # parsed and refused: known from now on
        protocol.data_received(REQUEST)  # refused from its bytes: the pass's horizon is taken
        run = server.refusal_run
        assert run is not None and len(transport.written) == 2
        asked = len(full)
        # a request due just after the kept horizon, read after places were taken (requests admitted at it)
        server.loop_lag.lag_ms = monotonic_ms() - (run.horizon_ms - server.config.slo_ms) - 0.5
        if grown == "places taken":
            engine.reserved += 1000
        else:
            now = monotonic_ms()
            samples = np.broadcast_to(np.zeros((1, 3, 32, 32), np.float32), (1000, 3, 32, 32))  # no copy
            server.scheduler.admit(Request(0, now, now + 1e9, Job(samples, None, now)))
        protocol.data_received(REQUEST)
        assert len(transport.written) == 3 and status_and_error(transport.written[-1])[0] == 503
        assert len(full) == asked, "refused by the horizon taken again, not asked in full"
        assert server.refusal_run is not run and server.refusal_run.horizon_ms > run.horizon_ms
        assert server.metrics.rejections["admission"] == 3
        protocol.data_received(REQUEST)  # and the next repeat is refused from the new run, as a repeat
        assert len(transport.written) == 4 and len(full) == asked
        protocol.connection_lost(None)

    asyncio.run(scenario())
