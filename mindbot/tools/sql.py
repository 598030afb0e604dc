"""Answers from SQL databases (SQLite and PostgreSQL): read-only queries, and confirmed writes.

Each database is configured by name; the LLM sees the names and descriptions, learns a
database's tables with ``describe_database`` and asks with ``query_database``::

    tools:
      sql:
        databases:
          shop:
            url: postgresql://assistant@db.example.com/shop
            password: ...              # or in the URL; never logged nor echoed
            description: orders, customers and stock of the web shop
          notes: {url: "sqlite:////srv/notes.db", allow_writes: true}

Reading is guarded three times over:

1. The statement is parsed with sqlglot, in the database's dialect: it must be exactly one
   SELECT (or WITH ... SELECT, UNION ...) with nothing that writes (no INTO, no data-modifying
   WITH, no PRAGMA, ATTACH, COPY, SET, CALL) and no function that touches files or the server
   (``pg_read_file``, ``lo_import``, ``load_extension``, ``writefile`` ...).
2. The connection cannot write. SQLite is opened ``mode=ro`` with ``query_only`` and an
   authorizer that allows nothing but reading; PostgreSQL runs a read-only transaction, with a
   ``statement_timeout``, through a server-side cursor (``DECLARE ... CURSOR FOR`` takes a single
   SELECT and nothing else).
3. At most ``row_limit`` rows come back (the LLM is told when there were more), long text is
   cut, and a query running past ``timeout_secs`` is stopped.

``write_database`` is offered only for databases with ``allow_writes``: one INSERT, UPDATE or
DELETE (no schema changes), run only after the caller says yes. These checks are a second line:
give the PostgreSQL role no more privileges than the assistant should have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import psycopg
import sqlglot
from loguru import logger
from psycopg import errors as pg_errors
from sqlglot import exp

from mindbot.errors import ConfigError
from mindbot.tools.base import Tool, ToolContext, ToolError, ToolUnavailable, tool
from mindbot.tools.session import MAX_RESULT_CHARS
from mindbot.tools.settings import SqlDatabase, ToolSettings

#: Longer SQL is refused: the LLM is writing a question, not a program.
MAX_SQL_CHARS = 4000
#: Seconds allowed to open a PostgreSQL connection (libpq counts whole seconds, at least 2).
CONNECT_TIMEOUT_SECS = 5
#: What a result may take as JSON, leaving the session's limit some room.
RESULT_BUDGET_CHARS = MAX_RESULT_CHARS - 400

# sqlglot warns with the statement's text (which may hold personal data) when it falls back to
# a generic command; such statements are refused anyway.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

Kind = Literal["sqlite", "postgresql"]
_DIALECTS: dict[Kind, str] = {"sqlite": "sqlite", "postgresql": "postgres"}
_DIALECT_NAMES: dict[Kind, str] = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

_READ_ROOTS = (exp.Select, exp.SetOperation)
_WRITE_ROOTS = (exp.Insert, exp.Update, exp.Delete)
# Statements (or clauses) that change something, wherever they appear in the tree.
_STATEMENTS: tuple[type, ...] = tuple(
    getattr(exp, name)
    for name in (
        "DML DDL Attach Detach Pragma Set Drop Alter TruncateTable Transaction Commit "
        "Rollback Use LoadData Grant Revoke Analyze Command Into Describe Kill Cache Uncache "
        "Refresh Declare Execute Comment Install"
    ).split()
    if hasattr(exp, name)
)
# Functions that read or write files, run SQL from strings, or act on the server.
_FORBIDDEN_FUNCTION = re.compile(
    r"^(pg_read_|pg_ls_|pg_stat_file|pg_file_|pg_logdir_|lo_|loread|lowrite|dblink|"
    r"pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_promote|"
    r"pg_switch_wal|pg_create_|pg_drop_|pg_replication_|pg_logical_|pg_backup_|"
    r"pg_start_backup|pg_stop_backup|pg_advisory|pg_try_advisory|pg_notify|pg_import_|"
    r"set_config|query_to_xml|cursor_to_xml|nextval|setval|"
    r"load_extension|readfile|writefile|edit$|fts3_tokenizer|zipfile|fsdir|sqlar_)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Database:
    """A configured database, resolved: where it is and how to speak to it."""

    name: str
    kind: Kind
    location: str  # the SQLite file, or the PostgreSQL URL (never shown)
    config: SqlDatabase

    @property
    def dialect(self) -> str:
        return _DIALECTS[self.kind]

    @property
    def dialect_name(self) -> str:
        return _DIALECT_NAMES[self.kind]


def make_tools(settings: ToolSettings) -> list[Tool]:
    """The database tools, when databases are configured (the write tool only if allowed).

    Raises:
        ConfigError: A database URL is neither ``sqlite:///...`` nor ``postgresql://...``.
    """
    databases = settings.sql.databases
    if not databases:
        return []
    lines = {}
    for name, config in databases.items():
        db = _resolve(name, config, error=ConfigError)
        about = f": {config.description}" if config.description else ""
        lines[name] = f"- {name} ({db.dialect_name}){about}"
    longest = max(db.timeout_secs for db in databases.values())
    common: dict[str, Any] = {
        "label": "the database",
        "timeout_secs": max(settings.timeout_secs, longest + CONNECT_TIMEOUT_SECS + 2),
    }
    readable = lambda s: bool(s.sql.databases)  # noqa: E731
    tools = [
        _offering(tool(_describe, name="describe_database", available=readable, **common), lines),
        _offering(tool(_query, name="query_database", available=readable, **common), lines),
    ]
    writable = {name: line for name, line in lines.items() if databases[name].allow_writes}
    if writable:
        write = tool(
            _write,
            name="write_database",
            confirm=lambda arguments: _confirm_write(settings, arguments),
            available=lambda s: any(db.allow_writes for db in s.sql.databases.values()),
            **common,
        )
        tools.append(_offering(write, writable))
    return tools


def _offering(base: Tool, lines: Mapping[str, str]) -> Tool:
    """The tool with the databases it may use in its description and schema."""
    properties = dict(base.properties)
    properties["database"] = {**properties["database"], "enum": list(lines)}
    listing = "\n".join(lines.values())
    return replace(
        base, description=f"{base.description}\n\nDatabases:\n{listing}", properties=properties
    )


# --- The tools --------------------------------------------------------------------------------


async def _describe(ctx: ToolContext, database: str) -> dict:
    """List a database's tables and their columns, to learn how to write SQL for it.

    Args:
        database: The database's name, one of those listed.
    """
    db = _database(ctx, database)
    if db.kind == "sqlite":
        tables = await asyncio.to_thread(_sqlite_run, db, _sqlite_describe, write=False)
    else:
        tables = await _pg_describe(db)
    result: dict[str, Any] = {"database": db.name, "dialect": db.dialect_name}
    if db.config.description:
        result["description"] = db.config.description
    result["tables"] = []
    for index, table in enumerate(tables):
        if _size(result) + _size(table) > RESULT_BUDGET_CHARS:
            result["other_tables"] = [t["name"] for t in tables[index:]]
            break
        result["tables"].append(table)
    if not tables:
        result["note"] = "There are no tables I can read."
    return result


async def _query(ctx: ToolContext, database: str, sql: str) -> dict:
    """Answer a question from a database with one read-only SQL query.

    Learn the tables with describe_database first. Only the first rows come back, so let the
    database do the work: COUNT, SUM, AVG, GROUP BY, ORDER BY ... LIMIT.

    Args:
        database: The database's name, one of those listed.
        sql: One SELECT statement (WITH ... SELECT and UNION are fine) in the database's
            dialect, e.g. "SELECT count(*) FROM orders WHERE status = 'open'".
    """
    db = _database(ctx, database)
    try:
        check_read_only(sql, db.dialect)
    except ToolError as e:
        if e.kind != "rejected" or not db.config.allow_writes:
            raise
        raise ToolError(f"{e.message} To change data, use write_database.", kind=e.kind) from None
    if db.kind == "sqlite":
        run = _sqlite_reader(sql, db.config.row_limit)
        columns, rows = await asyncio.to_thread(_sqlite_run, db, run, write=False)
    else:
        columns, rows = await _pg_read(db, sql)
    limit = db.config.row_limit
    more = len(rows) > limit
    names = _unique(columns)
    result: dict[str, Any] = {
        "database": db.name,
        "columns": names,
        "rows": [
            {
                name: _json_value(value, db.config.max_cell_chars)
                for name, value in zip(names, row, strict=True)
            }
            for row in rows[:limit]
        ],
    }
    while len(result["rows"]) > 1 and _size(result) > RESULT_BUDGET_CHARS:
        result["rows"].pop()
        more = True
    result["row_count"] = len(result["rows"])
    result["more_rows"] = more
    if more:
        result["note"] = (
            f"Only the first {len(result['rows'])} rows are shown; there are more. "
            "Use COUNT, GROUP BY or LIMIT for a complete answer."
        )
    elif not result["rows"]:
        result["note"] = "No rows matched."
    return result


async def _write(ctx: ToolContext, database: str, sql: str) -> dict:
    """Change data in a database with one INSERT, UPDATE or DELETE statement.

    The caller is asked to confirm before anything changes. Schema changes are not allowed.

    Args:
        database: The database's name, one of those listed.
        sql: One INSERT, UPDATE or DELETE statement in the database's dialect, e.g.
            "UPDATE tasks SET done = true WHERE id = 12".
    """
    db = _database(ctx, database)
    _check_writable(db)
    check_write(sql, db.dialect)
    if db.kind == "sqlite":
        count = await asyncio.to_thread(_sqlite_run, db, _sqlite_writer(sql), write=True)
    else:
        count = await _pg_write(db, sql)
    logger.info(f"sql: changed {max(count, 0)} rows in the {db.name} database")
    return {"database": db.name, "rows_affected": max(count, 0)}


def _confirm_write(settings: ToolSettings, arguments: Mapping[str, Any]) -> str:
    """The change said aloud; a change that would be refused is refused before asking."""
    name, sql = arguments["database"], arguments["sql"]
    db = _lookup(settings, name)
    _check_writable(db)
    check_write(sql, db.dialect)
    return f"run this change on the {db.name} database: {' '.join(sql.split())}"


# --- Checking statements ----------------------------------------------------------------------


def check_read_only(sql: str, dialect: str) -> None:
    """Refuse anything but one SELECT that only reads.

    Args:
        sql: The statement.
        dialect: sqlglot's dialect name (``"sqlite"``, ``"postgres"``).

    Raises:
        ToolError: ``bad_arguments`` if it cannot be parsed, ``rejected`` if it may write.
    """
    statement = _parse_one(sql, dialect)
    root = statement.unnest() if isinstance(statement, exp.Subquery) else statement
    if not isinstance(root, _READ_ROOTS):
        raise ToolError(
            f"Only a single SELECT query is allowed here, not {_word(root)}.", kind="rejected"
        )
    for node in root.walk():
        if isinstance(node, exp.Lock):
            raise ToolError("A query may not lock rows (FOR UPDATE).", kind="rejected")
        if isinstance(node, _STATEMENTS):
            raise ToolError(
                f"A query may only read, but this one contains {_word(node)}.", kind="rejected"
            )
        _check_function(node)


def check_write(sql: str, dialect: str) -> None:
    """Refuse anything but one INSERT, UPDATE or DELETE that changes only data.

    Args:
        sql: The statement.
        dialect: sqlglot's dialect name (``"sqlite"``, ``"postgres"``).

    Raises:
        ToolError: ``bad_arguments`` if it cannot be parsed, ``rejected`` otherwise.
    """
    root = _parse_one(sql, dialect)
    if not isinstance(root, _WRITE_ROOTS):
        raise ToolError(
            f"Only one INSERT, UPDATE or DELETE statement is allowed, not {_word(root)}.",
            kind="rejected",
        )
    for node in root.walk():
        if node is not root and isinstance(node, _STATEMENTS):
            raise ToolError(
                f"A change must be a single INSERT, UPDATE or DELETE, but this one also "
                f"contains {_word(node)}.",
                kind="rejected",
            )
        _check_function(node)


def _parse_one(sql: str, dialect: str) -> exp.Expression:
    text = sql.strip()
    if not text:
        raise ToolError("The SQL statement is empty.", kind="bad_arguments")
    if len(text) > MAX_SQL_CHARS:
        raise ToolError(
            f"The SQL is too long (at most {MAX_SQL_CHARS} characters).", kind="bad_arguments"
        )
    try:
        statements = [s for s in sqlglot.parse(text, dialect=dialect) if s is not None]
    except sqlglot.errors.ParseError as e:
        problem = e.errors[0] if e.errors else {}
        where = f" at line {problem.get('line')}, column {problem.get('col')}" if problem else ""
        detail = _plain(str(problem.get("description") or "not valid SQL"))
        raise ToolError(
            f"I couldn't parse that SQL{where}: {detail}", kind="bad_arguments"
        ) from None
    except sqlglot.errors.SqlglotError:
        raise ToolError(
            "I couldn't parse that SQL: check the quotes and brackets.", kind="bad_arguments"
        ) from None
    if not statements:
        raise ToolError("The SQL statement is empty.", kind="bad_arguments")
    if len(statements) > 1:
        raise ToolError(
            f"Send exactly one SQL statement; this has {len(statements)}.", kind="rejected"
        )
    return statements[0]


def _check_function(node: exp.Expression) -> None:
    if not isinstance(node, exp.Func):
        return
    name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
    if _FORBIDDEN_FUNCTION.match(name or ""):
        raise ToolError(f"The function {name.lower()} is not allowed.", kind="rejected")


def _word(node: exp.Expression) -> str:
    """The statement's kind, as a reader would name it ("a DROP statement")."""
    if isinstance(node, exp.Command):
        word = str(node.this).upper()
    elif isinstance(node, exp.Into):
        word = "SELECT INTO"
    else:
        word = {"truncatetable": "TRUNCATE", "loaddata": "LOAD DATA"}.get(node.key, node.key)
    word = word.upper()
    return f"{'an' if word[0] in 'AEIOU' else 'a'} {word} statement"


def _plain(text: str) -> str:
    """The message of a sqlglot error, without its terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip().rstrip(".") + "."


# --- Which database ---------------------------------------------------------------------------


def _database(ctx: ToolContext, name: str) -> _Database:
    return _lookup(ctx.settings, name)


def _lookup(settings: ToolSettings, name: str) -> _Database:
    databases = settings.sql.databases
    wanted = " ".join(name.split()).lower()
    for known, config in databases.items():
        if known.lower() == wanted:
            return _resolve(known, config, error=ToolError)
    names = ", ".join(databases) or "none"
    raise ToolError(
        f"There is no database called {name!r}; the databases are: {names}.", kind="not_found"
    )


# SQLAlchemy's spelling (a "+driver" part is ignored): sqlite:///relative/path.db,
# sqlite:////absolute/path.db, postgresql://user:password@host:port/dbname?options
_SQLITE_URL = re.compile(r"sqlite(\+\w+)?:///(?P<path>.+)", re.IGNORECASE)
_POSTGRES_URL = re.compile(r"postgres(ql)?(\+\w+)?://(?P<rest>.*)", re.IGNORECASE)


def _resolve(name: str, config: SqlDatabase, *, error: type[Exception]) -> _Database:
    url = config.url.strip()
    if match := _SQLITE_URL.fullmatch(url):
        return _Database(name, "sqlite", match["path"], config)
    if match := _POSTGRES_URL.fullmatch(url):
        return _Database(name, "postgresql", f"postgresql://{match['rest']}", config)
    # Never the URL itself in the message: it may hold a password.
    raise error(
        f"tools.sql.databases.{name}.url must look like sqlite:///path/to/file.db "
        "or postgresql://user@host/dbname"
    )


def _check_writable(db: _Database) -> None:
    if not db.config.allow_writes:
        raise ToolError(f"I may only read the {db.name} database, not change it.", kind="rejected")


# --- SQLite -----------------------------------------------------------------------------------

_SQLITE_READS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_SQLITE_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}


def _sqlite_run(db: _Database, work: Callable[[sqlite3.Connection], Any], *, write: bool) -> Any:
    """Open the file (read-only unless ``write``), run ``work`` within the time limit, close.

    Runs in a worker thread. Errors become ``ToolError``s.
    """
    path = Path(db.location).expanduser().resolve()
    deadline = time.monotonic() + db.config.timeout_secs
    try:
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode={'rw' if write else 'ro'}",
            uri=True,
            timeout=db.config.timeout_secs,
            isolation_level=None,  # one statement, committed on its own
            check_same_thread=False,
        )
    except sqlite3.Error as e:
        logger.warning(f"sql: couldn't open the {db.name} database ({type(e).__name__})")
        raise ToolUnavailable(f"I couldn't open the {db.name} database.") from None
    try:
        if not write:
            conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        # Checked by SQLite every few thousand steps: a runaway query is interrupted.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        return work(conn)
    except (sqlite3.Error, sqlite3.Warning) as e:
        raise _sqlite_error(db, e) from None
    finally:
        conn.close()


def _sqlite_error(db: _Database, error: Exception) -> ToolError:
    message = str(error)
    lowered = message.lower()
    if "interrupted" in lowered:
        return _timeout(db)
    if "not authorized" in lowered or "readonly" in lowered or "read-only" in lowered:
        return ToolError(f"The {db.name} database refused that: {message}.", kind="rejected")
    if "one statement at a time" in lowered:
        return ToolError("Send exactly one SQL statement.", kind="rejected")
    if "unable to open" in lowered or "not a database" in lowered or "locked" in lowered:
        logger.warning(f"sql: the {db.name} database failed ({type(error).__name__})")
        return ToolUnavailable(f"I couldn't use the {db.name} database right now.")
    return ToolError(f"The {db.name} database said: {message}.", kind="bad_arguments")


def _authorize_read(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if _FORBIDDEN_FUNCTION.match(arg2 or "") else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


def _authorize_write(action: int, arg1: str | None, arg2: str | None, *rest: Any) -> int:
    if action in _SQLITE_WRITES:
        internal = (arg1 or "").lower().startswith("sqlite_")
        return sqlite3.SQLITE_DENY if internal else sqlite3.SQLITE_OK
    return _authorize_read(action, arg1, arg2, *rest)


def _sqlite_reader(sql: str, limit: int) -> Callable[[sqlite3.Connection], Any]:
    def read(conn: sqlite3.Connection) -> tuple[list[str], list[tuple]]:
        conn.set_authorizer(_authorize_read)
        cursor = conn.execute(sql)
        columns = [column[0] for column in cursor.description or ()]
        return columns, cursor.fetchmany(limit + 1)

    return read


def _sqlite_writer(sql: str) -> Callable[[sqlite3.Connection], int]:
    def write(conn: sqlite3.Connection) -> int:
        conn.set_authorizer(_authorize_write)
        return conn.execute(sql).rowcount

    return write


def _sqlite_describe(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT m.name, m.type, p.name, p.type, p.pk FROM sqlite_master AS m "
        "JOIN pragma_table_info(m.name) AS p "
        "WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY m.name, p.cid"
    ).fetchall()
    references = {
        (table, column): f"{target}({to})" if to else target
        for table, column, target, to in conn.execute(
            'SELECT m.name, f."from", f."table", f."to" FROM sqlite_master AS m '
            "JOIN pragma_foreign_key_list(m.name) AS f WHERE m.type = 'table'"
        )
    }
    return _tables(
        (table, kind == "view", column, type_ or "any", bool(pk), references.get((table, column)))
        for table, kind, column, type_, pk in rows
    )


# --- PostgreSQL -------------------------------------------------------------------------------

_PG_COLUMNS = """
SELECT c.oid, n.nspname, c.relname, c.relkind IN ('v', 'm'), a.attname,
       format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname, a.attnum
"""
_PG_KEYS = """
SELECT k.conrelid, k.contype, a.attname, rn.nspname, rc.relname, ra.attname
FROM pg_constraint k
CROSS JOIN LATERAL unnest(k.conkey, k.confkey) AS cols(col, ref)
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = cols.col
LEFT JOIN pg_class rc ON rc.oid = k.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
LEFT JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = cols.ref
WHERE k.contype IN ('p', 'f')
"""


async def _pg_connect(db: _Database, *, read_only: bool) -> psycopg.AsyncConnection:
    timeout_ms = max(1, round(db.config.timeout_secs * 1000))
    options = f"-c statement_timeout={timeout_ms}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    extra: dict[str, Any] = {}
    if db.config.password is not None:
        extra["password"] = db.config.password.get_secret_value()
    try:
        return await psycopg.AsyncConnection.connect(
            db.location,
            connect_timeout=CONNECT_TIMEOUT_SECS,
            options=options,
            application_name="mindbot",
            **extra,
        )
    except psycopg.Error as e:
        logger.warning(f"sql: couldn't connect to the {db.name} database ({type(e).__name__})")
        logger.debug(f"sql: {_scrub(db, str(e))}")
        raise ToolUnavailable(f"I couldn't reach the {db.name} database.") from None


async def _pg_session(
    db: _Database,
    work: Callable[[psycopg.AsyncConnection], Awaitable[Any]],
    *,
    read_only: bool,
) -> Any:
    """Connect, run ``await work(conn)`` within the time limit, close; errors as ``ToolError``s."""
    conn = await _pg_connect(db, read_only=read_only)
    try:
        # statement_timeout stops the server; this stops us if the server never answers.
        async with asyncio.timeout(db.config.timeout_secs + 2):
            return await work(conn)
    except TimeoutError:
        raise _timeout(db) from None
    except psycopg.Error as e:
        raise _pg_error(db, e) from None
    finally:
        await conn.close()


async def _pg_read(db: _Database, sql: str) -> tuple[list[str], list[tuple]]:
    async def read(conn: psycopg.AsyncConnection) -> tuple[list[str], list[tuple]]:
        await conn.execute("SET TRANSACTION READ ONLY")
        # A server-side cursor: DECLARE accepts one SELECT (or VALUES) and nothing that writes,
        # and the server holds the rows we don't fetch.
        async with conn.cursor(name="mindbot_query") as cursor:
            await cursor.execute(sql)
            columns = [column.name for column in cursor.description or ()]
            rows = await cursor.fetchmany(db.config.row_limit + 1)
        await conn.rollback()
        return columns, rows

    return await _pg_session(db, read, read_only=True)


async def _pg_write(db: _Database, sql: str) -> int:
    async def write(conn: psycopg.AsyncConnection) -> int:
        cursor = conn.cursor()
        # A prepared statement holds exactly one statement, whatever the text hides.
        await cursor.execute(sql, prepare=True)
        count = cursor.rowcount
        await conn.commit()
        return count

    return await _pg_session(db, write, read_only=False)


async def _pg_describe(db: _Database) -> list[dict[str, Any]]:
    async def describe(conn: psycopg.AsyncConnection) -> tuple[list[tuple], list[tuple]]:
        await conn.execute("SET TRANSACTION READ ONLY")
        columns = await (await conn.execute(_PG_COLUMNS)).fetchall()
        keys = await (await conn.execute(_PG_KEYS)).fetchall()
        await conn.rollback()
        return columns, keys

    columns, keys = await _pg_session(db, describe, read_only=True)
    primary = {(oid, column) for oid, kind, column, *_ in keys if kind == "p"}
    references = {
        (oid, column): f"{_pg_name(schema, table)}({target})"
        for oid, kind, column, schema, table, target in keys
        if kind == "f" and table
    }
    return _tables(
        (
            _pg_name(schema, table),
            is_view,
            column,
            type_,
            (oid, column) in primary,
            references.get((oid, column)),
        )
        for oid, schema, table, is_view, column, type_ in columns
    )


def _pg_name(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


def _pg_error(db: _Database, error: psycopg.Error) -> ToolError:
    message = _scrub(db, error.diag.message_primary or "")
    if isinstance(error, pg_errors.QueryCanceled):
        return _timeout(db)
    sqlstate = error.sqlstate or ""
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)) and (
        not sqlstate or sqlstate.startswith(("08", "57P"))
    ):
        logger.warning(f"sql: lost the {db.name} database ({type(error).__name__})")
        return ToolUnavailable(f"I lost the connection to the {db.name} database.")
    if sqlstate in ("25006", "42501", "0A000") or sqlstate.startswith("25"):
        return ToolError(f"The {db.name} database refused that: {message}.", kind="rejected")
    if message:
        return ToolError(f"The {db.name} database said: {message}.", kind="bad_arguments")
    logger.warning(f"sql: the {db.name} database failed ({type(error).__name__})")
    return ToolError(f"Something went wrong with the {db.name} database.", kind="failed")


def _scrub(db: _Database, text: str) -> str:
    """``text`` without the database's password, however it is spelled."""
    secrets = set()
    if db.config.password is not None:
        secrets.add(db.config.password.get_secret_value())
    try:
        password = urlsplit(db.location).password
    except ValueError:
        password = None
    if password:
        secrets.update({password, unquote(password)})
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# --- Results ----------------------------------------------------------------------------------


def _timeout(db: _Database) -> ToolError:
    return ToolError(
        f"The query took longer than {db.config.timeout_secs:g} seconds, so I stopped it. "
        "Try a simpler query.",
        kind="timeout",
    )


def _tables(columns: Iterable[tuple]) -> list[dict[str, Any]]:
    """Tables from ``(table, is_view, column, type, primary_key, references)`` in order."""
    tables: dict[str, dict[str, Any]] = {}
    for table, is_view, column, type_, primary_key, references in columns:
        entry = tables.setdefault(table, {"name": table, "columns": []})
        if is_view:
            entry["view"] = True
        text = f"{column} {type_}".strip()
        if primary_key:
            text += " primary key"
        if references:
            text += f" references {references}"
        entry["columns"].append(text)
    return list(tables.values())


def _unique(columns: Sequence[str]) -> list[str]:
    """Column names, made distinct ("name", "name_2") so each row is a faithful dict."""
    names: list[str] = []
    for column in columns:
        base = name = column or "column"
        number = 1
        while name in names:
            number += 1
            name = f"{base}_{number}"
        names.append(name)
    return names


def _json_value(value: Any, max_chars: int) -> Any:
    """A database value as JSON the LLM can read: ISO dates, plain numbers, cut text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 1e15 else number
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, list | tuple):
        return [_json_value(item, max_chars) for item in value[:20]]
    if isinstance(value, dict):
        return {str(k): _json_value(v, max_chars) for k, v in list(value.items())[:20]}
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str))
