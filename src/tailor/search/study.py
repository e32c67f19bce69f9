"""Optuna storage for searches: where studies persist and how workers share them.

`open_storage(None)` keeps the study in memory; a path (no `://`) becomes a SQLite file; any other
string is a SQLAlchemy database URL (PostgreSQL, MySQL, ...) for many workers on many machines. RDB
storages get a heartbeat (a worker that dies mid-trial has its trial failed after the grace period and
re-queued once by `RetryHeartbeatStaleTrialCallback`) and, for SQLite, a long busy timeout so that
concurrent writers wait for the file lock instead of failing, and write-ahead logging so that commits do not
wait for the disk (see `_fast_sqlite`).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

from tailor.search.metrics import SearchError

#: Seconds between heartbeats of a running trial, and the silence after which it is declared dead.
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60
#: Seconds a SQLite connection waits for another writer's lock before raising "database is locked".
SQLITE_TIMEOUT_S = 120
#: Tries to open an RDB storage; workers starting together on a new database race to create its tables.
CREATE_ATTEMPTS = 5


def storage_url(storage: str | os.PathLike[str]) -> str:
    """A database URL: paths (no `://`) become absolute `sqlite:///` URLs, URLs pass through."""
    if isinstance(storage, os.PathLike) or (isinstance(storage, str) and "://" not in storage):
        path = Path(storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if isinstance(storage, str) and storage:
        return storage
    raise SearchError(f"storage must be None, a path, a database URL or an Optuna storage, got {storage!r}")


def redact(url: str) -> str:
    """The URL with any password hidden (for logs and saved fronts)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown without its credentials part
        return url.split("@")[-1]


def open_storage(storage: Any = None) -> tuple[Any, str]:
    """An Optuna storage and a printable description of it (see the module docstring)."""
    import optuna

    if storage is None:
        return optuna.storages.InMemoryStorage(), "memory"
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage, type(storage).__name__
    url = storage_url(storage)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    rdb = None
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
            break
        except (ImportError, ValueError) as exc:
            raise SearchError(f"cannot open storage {redact(url)!r}: {exc}") from None
        except Exception as exc:  # sqlalchemy errors: a worker racing to create the same tables, or no database
            if type(exc).__name__ in ("IntegrityError", "OperationalError") and attempt + 1 < CREATE_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))  # another worker created the schema meanwhile: open it
                continue
            raise SearchError(f"cannot open storage {redact(url)!r}: {type(exc).__name__}: {exc}") from None
    if url.startswith("sqlite") and ":memory:" not in url:
        _fast_sqlite(rdb.engine)
    return rdb, redact(url)


def _fast_sqlite(engine: Any) -> None:
    """Write-ahead logging and `synchronous=NORMAL` on every connection of a SQLite engine.

    Optuna commits several times per trial; with the default rollback journal every commit waits for an
    fsync (about 10 ms here). WAL lets readers proceed during a write and syncs at checkpoints instead;
    a crash of the process loses nothing, a power failure at most the last commits. Needs a local disk.
    """
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while creating the tables reconnect with the pragmas
