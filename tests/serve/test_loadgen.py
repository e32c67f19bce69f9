"""The load generator's choice of free connection: the order decides how cold the server's per-connection state is
under a burst (`--reuse`), so it must be the one asked for, and a closed connection is never reused."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.serve.server.loadgen import REUSE_ORDERS, _Client, main, run_open_loop


def _taken(reuse: str, closed: list[bool]) -> list[int]:
    async def take_all() -> list[int]:
        client = _Client("127.0.0.1", 1, 0, len(closed), reuse)
        client.idle.extend(SimpleNamespace(closed=shut, index=i) for i, shut in enumerate(closed))
        order = []
        while (conn := client.free_connection()) is not None:
            order.append(conn.index)
        return order

    return asyncio.run(take_all())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), max_size=12))
def test_free_connections_come_back_freed_last_first_or_idle_longest_first(closed: list[bool]) -> None:
    open_ones = [i for i, shut in enumerate(closed) if not shut]
    assert _taken("lifo", closed) == open_ones[::-1]
    assert _taken("fifo", closed) == open_ones


def test_an_unknown_reuse_order_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert REUSE_ORDERS == ("lifo", "fifo")
    with pytest.raises(ValueError, match=r"reuse 'random': expected one of \['lifo', 'fifo'\]"):
        run_open_loop("http://127.0.0.1:1", [b""], np.zeros(1), reuse="random")
    with pytest.raises(SystemExit) as exit_info:
        main(["--url", "http://127.0.0.1:1", "--model", "m", "--input-shape", "3,4,4", "--reuse", "random"])
    assert exit_info.value.code == 2
    assert "argument --reuse: invalid choice: 'random'" in capsys.readouterr().err
