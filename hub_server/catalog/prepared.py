"""Querysets compiled to SQL once, then run with other values: the ORM still defines each hot
read, but a request pays for executing it rather than for building it.

Building the SQL of one select_related `.values()` query costs about 1.5 ms of CPU in Django here,
more than ten times what executing it costs (measured in benchmarks/api.py's cold rotations).
`PreparedQuery` compiles the queryset once per database connection with sentinel values in the
parameter slots, checks that each sentinel reached the SQL parameters unchanged, and afterwards
only swaps in the real values, executes and applies the same converters the ORM would.

On PostgreSQL the statement is also PREPAREd on the server once per session: planning the
detail's five-table join took 1.1 ms of PostgreSQL's CPU against 0.17 ms to execute it. Set
HUB_DB_SERVER_PREPARE=0 behind a pooler that shares sessions between clients (PgBouncer in
transaction mode), where a session's prepared statements are not the client's.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet

_STRING_SENTINEL = "\x1fprepared-parameter:{}\x1f"
_INT_SENTINEL_BASE = -7_319_000_000_000


@dataclass
class _Compiled:
    sql: str
    params: list  # constants, with None where a named slot goes
    slots: list[tuple[int, str]]  # (position in params, slot name)
    names: list[str]
    compiler: object
    converters: dict
    session: object = None  # the driver connection the statement was PREPAREd on, if any


# Names of server-side statements. One counter for every thread of the process: a generator
# here raised "generator already executing" when two threads of a threaded worker prepared at
# once (tests/api/test_prepared.py). A name is only unique per process, which is all it needs:
# each thread has its own database session.
_statement_numbers = itertools.count(1)
_statement_lock = threading.Lock()


def statement_name() -> str:
    with _statement_lock:
        number = next(_statement_numbers)
    return f"hub_prepared_{number}"


def _numbered_placeholders(sql: str) -> str:
    """A DB-API `%s` statement as PostgreSQL's PREPARE text: `$1, $2, ...`, and `%%` as `%`."""
    parts, index, n = [], 0, 0
    while (found := sql.find("%", index)) != -1:
        parts.append(sql[index:found])
        marker = sql[found + 1 : found + 2]
        if marker == "s":
            n += 1
            parts.append(f"${n}")
        elif marker == "%":
            parts.append("%")
        else:
            raise ValueError(f"unexpected placeholder %{marker} in {sql!r}")
        index = found + 2
    parts.append(sql[index:])
    return "".join(parts)


class PreparedQuery:
    """`build(**values)` returns a `.values()` queryset; `rows(**values)` runs it as prepared.

    `slots` names each parameter and its type (str or int); the queryset must pass each value to
    the database as it is (an exact lookup or an IN list item), which compiling checks. With
    `paged`, the (unsliced) queryset gets `LIMIT %s OFFSET %s` with the slots `limit` and
    `offset`, so every page of a listing is one statement.
    """

    def __init__(
        self,
        build: Callable[..., QuerySet],
        using: str = "default",
        paged: bool = False,
        **slots: type,
    ):
        self.build = build
        self.using = using
        self.paged = paged
        self.slots = slots
        self._local = threading.local()

    def _compile(self, connection) -> _Compiled:
        sentinels = {}
        for i, (name, kind) in enumerate(self.slots.items()):
            if kind is int:
                sentinels[name] = _INT_SENTINEL_BASE - i
            elif kind is str:
                sentinels[name] = _STRING_SENTINEL.format(name)
            else:
                raise TypeError(f"slot {name!r}: only str and int parameters can be prepared")
        queryset = self.build(**sentinels)
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        by_value = {value: name for name, value in sentinels.items()}
        slots, constants, seen = [], [], set()
        for position, value in enumerate(params):
            name = by_value.get(value) if isinstance(value, str | int) else None
            if name is None and isinstance(value, str) and "\x1fprepared-parameter:" in value:
                raise ValueError(f"{value!r}: a prepared value must reach the SQL unchanged")
            if name is not None:
                slots.append((position, name))
                seen.add(name)
            constants.append(None if name is not None else value)
        if missing := set(self.slots) - seen:
            raise ValueError(f"slots {sorted(missing)} do not appear in the query's parameters")
        if self.paged:
            if queryset.query.is_sliced:
                raise ValueError("a paged query is sliced by its limit and offset slots")
            sql += " LIMIT %s OFFSET %s"
            slots += [(len(constants), "limit"), (len(constants) + 1, "offset")]
            constants += [None, None]
        query = queryset.query
        names = [*query.extra_select, *query.values_select, *query.annotation_select]
        fields = [s[0] for s in compiler.select[: compiler.col_count]]
        converters = compiler.get_converters(fields)
        return _Compiled(sql, constants, slots, names, compiler, converters)

    def _server_prepare(self, connection, cursor, compiled: _Compiled) -> None:
        if connection.vendor != "postgresql" or not settings.HUB_DB_SERVER_PREPARE:
            return
        name = statement_name()
        cursor.execute(f"PREPARE {name} AS {_numbered_placeholders(compiled.sql)}")
        arguments = ", ".join(["%s"] * len(compiled.params))
        compiled.sql = f"EXECUTE {name}({arguments})" if arguments else f"EXECUTE {name}"
        compiled.session = connection.connection

    def rows(self, **values) -> list[dict]:
        connection = connections[self.using]
        connection.ensure_connection()
        compiled = getattr(self._local, "compiled", None)
        if (
            compiled is None
            or compiled.compiler.connection is not connection
            or (compiled.session is not None and compiled.session is not connection.connection)
        ):  # a new connection, or the same one reconnected: a new session
            compiled = self._local.compiled = self._compile(connection)
            with connection.cursor() as cursor:
                self._server_prepare(connection, cursor, compiled)
        params = list(compiled.params)
        for position, name in compiled.slots:
            params[position] = values[name]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        if compiled.converters:
            fetched = compiled.compiler.apply_converters(fetched, compiled.converters)
        return [dict(zip(compiled.names, row, strict=True)) for row in fetched]
