"""`COPY … TO STDOUT` read whole, straight from libpq's buffer.

psycopg's `Copy` hands over one row per call, each through its generator and wait machinery (~1 µs a row in
Python); a view reads 10⁵–10⁶ rows, so the analytics read results here instead: one tight loop over
`PQgetCopyData`, waiting on the socket only when libpq's buffer is empty. The statement and its client-side
parameter binding are those of `cursor.copy(statement, params)`.
"""

from __future__ import annotations

import io
import select
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import errors, pq, sql


def copy_out(conn: psycopg.Connection, statement: sql.Composable, params: Mapping[str, Any] | None = None) -> bytes:
    """All the data a `COPY (…) TO STDOUT` statement sends; SQL errors raised as psycopg raises them.

    Within the connection's current transaction, if one is open. A connection interrupted mid-COPY is closed:
    its protocol state is unknown, so a pool must not hand it out again."""
    text = psycopg.ClientCursor(conn).mogrify(statement, params)
    pg = conn.pgconn
    encoding = conn.info.encoding
    with conn.lock:
        try:
            return _run(pg, text.encode(encoding), encoding)
        except errors.Error:
            raise
        except BaseException:
            conn.close()
            raise


def _run(pg: pq.abc.PGconn, query: bytes, encoding: str) -> bytes:
    pg.send_query(query)
    while pg.flush():  # the connection is non-blocking: the query may leave in several writes
        select.select([], [pg.socket], [])
    first = _next_result(pg)
    if first is None or first.status != pq.ExecStatus.COPY_OUT:
        _discard_results(pg)
        raise _error(pg, first, encoding)
    buffer = io.BytesIO()
    while True:
        size, data = pg.get_copy_data(1)
        if size > 0:
            buffer.write(data)
        elif size == 0:  # libpq's buffer is empty: wait for the server
            select.select([pg.socket], [], [])
            pg.consume_input()
        elif size == -1:  # the end of the data; the statement's own result follows
            break
        else:
            raise errors.OperationalError(f"COPY failed: {pg.error_message.decode(encoding, 'replace')}")
    last = _next_result(pg)
    _discard_results(pg)
    if last is None or last.status != pq.ExecStatus.COMMAND_OK:
        raise _error(pg, last, encoding)
    return buffer.getvalue()


def _next_result(pg: pq.abc.PGconn) -> pq.abc.PGresult | None:
    while pg.is_busy():
        select.select([pg.socket], [], [])
        pg.consume_input()
    return pg.get_result()


def _discard_results(pg: pq.abc.PGconn) -> None:
    while _next_result(pg) is not None:
        pass


def _error(pg: pq.abc.PGconn, result: pq.abc.PGresult | None, encoding: str) -> errors.Error:
    if result is None:
        return errors.OperationalError(f"no result: {pg.error_message.decode(encoding, 'replace')}")
    if result.status == pq.ExecStatus.FATAL_ERROR:
        return errors.error_from_result(result, encoding=encoding)
    return errors.ProgrammingError(f"not a COPY TO statement (result {pq.ExecStatus(result.status).name})")
