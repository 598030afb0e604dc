"""The database tools against a real SQLite file and a real PostgreSQL 15 server.

Each test that can runs on both: a small vet clinic (owners, pets, visits, readings). Data is
checked afterwards over a separate connection, so "nothing changed" is what the server says.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from loguru import logger

from mindbot.errors import ConfigError
from mindbot.harness import free_port
from mindbot.tools import ToolContext, ToolRegistry, ToolSession, ToolSettings
from mindbot.tools import sql as sql_tools
from mindbot.tools.sql import make_tools

from servers.postgres import PostgresServer, postgres_server

SCHEMA = """
CREATE TABLE owners (id integer PRIMARY KEY, name text NOT NULL, city text);
CREATE TABLE pets (
    id integer PRIMARY KEY,
    name text NOT NULL,
    species text,
    born date,
    weight_kg numeric(5, 2),
    owner_id integer REFERENCES owners (id)
);
CREATE TABLE visits (id integer PRIMARY KEY, pet_id integer REFERENCES pets (id), notes text);
CREATE TABLE readings (id integer PRIMARY KEY, celsius real);
INSERT INTO owners VALUES (1, 'Sam Carter', 'Leeds'), (2, 'Priya Shah', 'York');
INSERT INTO pets VALUES
    (1, 'Rex', 'dog', '2019-04-02', 31.50, 1),
    (2, 'Misty', 'cat', '2021-07-15', 4.20, 2),
    (3, 'Bolt', 'dog', '2022-01-30', 12.75, 2);
INSERT INTO visits VALUES (1, 1, 'Annual jab. ' || 'Very long notes. ' || '{long}');
"""
LONG_NOTES = "x" * 1000
READINGS = [(n, 20 + n / 10) for n in range(1, 51)]
PET_NAMES = [("Rex",), ("Misty",), ("Bolt",)]


@dataclass
class Clinic:
    """One backend holding the clinic: its URL and a way to look at what it stores."""

    kind: str
    url: str
    query: Callable[[str], list[tuple]]
    slow_sql: str
    server: PostgresServer | None = None

    def pets(self) -> list[tuple]:
        return self.query("SELECT name FROM pets ORDER BY id")

    def tables(self) -> set[str]:
        if self.kind == "sqlite":
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {name for (name,) in rows}


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as server:
        yield server


def sqlite_clinic(folder: Path) -> Clinic:
    path = folder / "clinic.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA.replace("{long}", LONG_NOTES))
        conn.executemany("INSERT INTO readings VALUES (?, ?)", READINGS)
    conn.close()

    def query(sql: str) -> list[tuple]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(sql).fetchall()
        conn.close()
        return rows

    slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    return Clinic("sqlite", f"sqlite:///{path}", query, slow)


def postgres_clinic(server: PostgresServer) -> Clinic:
    # Created by the test role, which then owns (and may write) the tables.
    with server.connect(superuser=False) as conn:
        conn.execute("DROP TABLE IF EXISTS visits, pets, owners, readings, stolen CASCADE")
        conn.execute(SCHEMA.replace("{long}", LONG_NOTES))  # type: ignore[arg-type]
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO readings VALUES (%s, %s)", READINGS)
    return Clinic("postgresql", server.url, server.query, "SELECT pg_sleep(5)", server)


@pytest.fixture(params=["sqlite", "postgresql"])
def clinic(request, tmp_path) -> Clinic:
    """The clinic, once in SQLite and once in PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_clinic(tmp_path)
    return postgres_clinic(request.getfixturevalue("pg_server"))


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def logged():
    """Every loguru message, DEBUG included, during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


def session_for(http, databases: dict, reports: list | None = None) -> ToolSession:
    settings = ToolSettings(retries=0, sql={"databases": databases})
    context = ToolContext(settings=settings, http=http)
    on_call = reports.append if reports is not None else None
    return ToolSession(make_tools(settings), context, on_call=on_call)


# --- What the LLM is offered ------------------------------------------------------------------


def test_no_databases_no_tools():
    assert make_tools(ToolSettings()) == []


def test_the_llm_sees_each_database_and_the_write_tool_only_where_allowed():
    settings = ToolSettings(
        sql={
            "databases": {
                "clinic": {"url": "sqlite:///clinic.db", "description": "pets and their owners"},
                "shop": {"url": "postgresql://bot@db.example.com/shop", "allow_writes": True},
            }
        }
    )
    registry = ToolRegistry(settings)
    registry.load("mindbot.tools.sql")
    tools = {t.name: t for t in registry.select(["sql"])}

    assert set(tools) == {"describe_database", "query_database", "write_database"}
    query = tools["query_database"]
    assert "- clinic (SQLite): pets and their owners" in query.description
    assert "- shop (PostgreSQL)" in query.description
    assert query.properties["database"]["enum"] == ["clinic", "shop"]
    assert "sql" in query.required
    assert tools["write_database"].properties["database"]["enum"] == ["shop"]
    assert "clinic" not in tools["write_database"].description
    assert tools["write_database"].confirm is not None


def test_read_only_databases_get_no_write_tool():
    settings = ToolSettings(sql={"databases": {"clinic": {"url": "sqlite:///clinic.db"}}})
    assert [t.name for t in make_tools(settings)] == ["describe_database", "query_database"]


def test_a_bad_url_stops_startup_without_showing_the_password():
    settings = ToolSettings(
        sql={"databases": {"crm": {"url": "mysql://admin:hunter2-secret@db/crm"}}}
    )
    with pytest.raises(ConfigError) as caught:
        make_tools(settings)
    assert "tools.sql.databases.crm.url" in str(caught.value)
    assert "hunter2" not in str(caught.value)


# --- Reading ----------------------------------------------------------------------------------


async def test_describe_lists_tables_columns_and_keys(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url, "description": "a vet clinic"}})

    result = await session.invoke("describe_database", {"database": "clinic"})

    assert result["ok"], result
    described = result["result"]
    assert described["dialect"] == ("SQLite" if clinic.kind == "sqlite" else "PostgreSQL")
    assert described["description"] == "a vet clinic"
    tables = {t["name"]: t["columns"] for t in described["tables"]}
    assert set(tables) == {"owners", "pets", "visits", "readings"}
    pets = [column.lower() for column in tables["pets"]]
    assert pets[0] == "id integer primary key"
    assert pets[1] == "name text"
    assert pets[4].startswith("weight_kg numeric(5")
    assert pets[5] == "owner_id integer references owners(id)"


async def test_a_question_is_answered_with_real_values(http, clinic):
    session = session_for(http, {"Clinic": {"url": clinic.url}})

    result = await session.invoke(
        "query_database",
        {
            "database": "clinic",  # names match without regard to case
            "sql": "SELECT p.name, p.born, p.weight_kg, o.name AS owner, o.name "
            "FROM pets p JOIN owners o ON o.id = p.owner_id "
            "WHERE p.species = 'dog' ORDER BY p.weight_kg DESC",
        },
    )

    assert result["ok"], result
    answer = result["result"]
    assert answer["columns"] == ["name", "born", "weight_kg", "owner", "name_2"]
    assert answer["rows"] == [
        {
            "name": "Rex",
            "born": "2019-04-02",
            "weight_kg": 31.5,
            "owner": "Sam Carter",
            "name_2": "Sam Carter",
        },
        {
            "name": "Bolt",
            "born": "2022-01-30",
            "weight_kg": 12.75,
            "owner": "Priya Shah",
            "name_2": "Priya Shah",
        },
    ]
    assert answer["row_count"] == 2
    assert answer["more_rows"] is False


async def test_aggregates_and_unions_are_fine(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url}})

    result = await session.invoke(
        "query_database",
        {
            "database": "clinic",
            "sql": "WITH counts AS (SELECT species, count(*) AS n FROM pets GROUP BY species) "
            "SELECT species, n FROM counts UNION ALL SELECT 'all', count(*) FROM pets "
            "ORDER BY n DESC, species;",
        },
    )

    assert result["ok"], result
    assert result["result"]["rows"] == [
        {"species": "all", "n": 3},
        {"species": "dog", "n": 2},
        {"species": "cat", "n": 1},
    ]


async def test_only_row_limit_rows_come_back(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url, "row_limit": 5}})

    result = await session.invoke(
        "query_database", {"database": "clinic", "sql": "SELECT * FROM readings ORDER BY id"}
    )

    assert result["ok"], result
    answer = result["result"]
    assert [row["id"] for row in answer["rows"]] == [1, 2, 3, 4, 5]
    assert answer["more_rows"] is True
    assert "first 5 rows" in answer["note"]


async def test_long_text_is_cut(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url, "max_cell_chars": 40}})

    result = await session.invoke(
        "query_database", {"database": "clinic", "sql": "SELECT notes FROM visits"}
    )

    notes = result["result"]["rows"][0]["notes"]
    assert notes.startswith("Annual jab. Very long notes. xxx")
    assert len(notes) <= 40
    assert notes.endswith("…")


async def test_a_slow_query_is_stopped(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url, "timeout_secs": 0.5}})

    result = await session.invoke("query_database", {"database": "clinic", "sql": clinic.slow_sql})

    assert result["ok"] is False
    assert result["error"] == "timeout"
    assert "0.5 seconds" in result["message"]
    # The database is fine afterwards.
    again = await session.invoke(
        "query_database", {"database": "clinic", "sql": "SELECT count(*) AS n FROM pets"}
    )
    assert again["result"]["rows"] == [{"n": 3}]


async def test_a_mistake_in_the_sql_is_explained(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url}})

    result = await session.invoke(
        "query_database", {"database": "clinic", "sql": "SELECT nmae FROM pets"}
    )

    assert result["ok"] is False
    assert result["error"] == "bad_arguments"
    assert "nmae" in result["message"]


async def test_unparseable_sql_is_a_bad_argument(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url}})

    result = await session.invoke(
        "query_database", {"database": "clinic", "sql": "SELECT name FROM pets WHERE"}
    )

    assert result["ok"] is False
    assert result["error"] == "bad_arguments"
    assert result["message"].startswith("I couldn't parse that SQL at line 1")


async def test_an_unknown_database_is_named(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url}, "shop": {"url": clinic.url}})

    result = await session.invoke("query_database", {"database": "crm", "sql": "SELECT 1"})

    assert result["ok"] is False
    assert result["error"] == "not_found"
    assert "clinic, shop" in result["message"]


# --- Injection --------------------------------------------------------------------------------

BOTH = [
    ("SELECT 1; DROP TABLE pets", "exactly one"),
    ("DROP TABLE pets", "DROP"),
    ("UPDATE pets SET name = 'Pwned'", "UPDATE"),
    ("DELETE FROM pets", "DELETE"),
    ("INSERT INTO owners VALUES (9, 'Mallory', 'Nowhere')", "INSERT"),
    ("SELECT name FROM pets /* just reading */; DELETE FROM pets -- innocent", "exactly one"),
    ("/* SELECT * FROM pets */ DROP TABLE pets", "DROP"),
    ("SELECT name FROM pets --\n; DROP TABLE pets", "exactly one"),
    ("", "empty"),
]
SQLITE_ONLY = [
    ("ATTACH DATABASE '{tmp}/evil.db' AS evil", "ATTACH"),
    ("PRAGMA writable_schema = ON", "PRAGMA"),
    ("SELECT load_extension('{tmp}/evil.so')", "load_extension"),
    ("SELECT writefile('{tmp}/evil.txt', 'pwned')", "writefile"),
    ("SELECT readfile('/etc/passwd')", "readfile"),
]
POSTGRES_ONLY = [
    ("WITH gone AS (DELETE FROM pets RETURNING *) SELECT * FROM gone", "DELETE"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT lo_import('/etc/passwd')", "lo_import"),
    ("COPY pets TO '{tmp}/pets.csv'", "COPY"),
    ("SELECT * INTO stolen FROM pets", "INTO"),
    ("SELECT * FROM pets FOR UPDATE", "FOR UPDATE"),
    ("SET default_transaction_read_only = off", "SET"),
    ("CALL make_admin()", "CALL"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config"),
]


@pytest.mark.parametrize("sql, why", BOTH)
async def test_an_injection_through_sql_is_refused_and_changes_nothing(
    http, clinic, tmp_path, sql, why
):
    await assert_refused(http, clinic, tmp_path, sql, why)


@pytest.mark.parametrize("sql, why", SQLITE_ONLY)
async def test_a_sqlite_injection_is_refused_and_changes_nothing(http, tmp_path, sql, why):
    await assert_refused(http, sqlite_clinic(tmp_path), tmp_path, sql, why)


@pytest.mark.parametrize("sql, why", POSTGRES_ONLY)
async def test_a_postgres_injection_is_refused_and_changes_nothing(
    http, pg_server, tmp_path, sql, why
):
    await assert_refused(http, postgres_clinic(pg_server), tmp_path, sql, why)


async def assert_refused(http, clinic: Clinic, tmp_path: Path, sql: str, why: str) -> None:
    session = session_for(http, {"clinic": {"url": clinic.url}})

    result = await session.invoke(
        "query_database", {"database": "clinic", "sql": sql.replace("{tmp}", str(tmp_path))}
    )

    assert result["ok"] is False, result
    assert result["error"] in ("rejected", "bad_arguments")
    assert why.lower() in result["message"].lower()
    assert clinic.pets() == PET_NAMES
    assert clinic.tables() == {"owners", "pets", "visits", "readings"}
    assert clinic.query("SELECT count(*) FROM owners") == [(2,)]
    assert stray_files(tmp_path) == []


def stray_files(folder: Path) -> list[str]:
    """Files an attack tried to make (attached databases, copies, written files)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("evil", "pets")))


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM pets",
        "SELECT 1; DELETE FROM pets",
        "INSERT INTO pets (id, name) SELECT 9, 'Mallory'",
        "SELECT * FROM pets FOR UPDATE",
        "PRAGMA writable_schema = ON",
    ],
)
async def test_the_connection_refuses_writes_even_if_the_parser_were_fooled(clinic, sql):
    if clinic.kind == "postgresql" and sql.startswith("PRAGMA"):
        sql = "WITH gone AS (DELETE FROM pets RETURNING *) SELECT * FROM gone"
    settings = ToolSettings(sql={"databases": {"clinic": {"url": clinic.url}}})
    db = sql_tools._lookup(settings, "clinic")

    with pytest.raises(sql_tools.ToolError) as caught:
        if clinic.kind == "sqlite":
            read = sql_tools._sqlite_reader(sql, 10)
            sql_tools._sqlite_run(db, read, write=False)
        else:
            await sql_tools._pg_read(db, sql)

    assert caught.value.kind in ("rejected", "bad_arguments")
    assert clinic.pets() == PET_NAMES


# --- Writing ----------------------------------------------------------------------------------


async def test_a_write_waits_for_a_yes_then_changes_the_data(http, clinic):
    reports: list = []
    session = session_for(http, {"clinic": {"url": clinic.url, "allow_writes": True}}, reports)
    change = "UPDATE pets SET weight_kg = 32 WHERE name = 'Rex'"
    misrouted = await session.invoke("query_database", {"database": "clinic", "sql": change})
    assert "use write_database" in misrouted["message"]

    proposed = await session.invoke(
        "write_database", {"database": "clinic", "sql": change}, user_turns=["Rex weighs 32 now"]
    )

    assert proposed["needs_confirmation"] is True
    assert proposed["action"] == f"run this change on the clinic database: {change}"
    assert float(clinic.query("SELECT weight_kg FROM pets WHERE id = 1")[0][0]) == 31.5

    done = await session.invoke(
        "confirm_action", {}, user_turns=["Rex weighs 32 now", "yes please"]
    )

    assert done == {"ok": True, "result": {"database": "clinic", "rows_affected": 1}}
    assert float(clinic.query("SELECT weight_kg FROM pets WHERE id = 1")[0][0]) == 32
    assert reports[-1].name == "write_database" and reports[-1].confirmed


async def test_a_write_is_dropped_on_no(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url, "allow_writes": True}})

    await session.invoke(
        "write_database",
        {"database": "clinic", "sql": "DELETE FROM pets WHERE species = 'cat'"},
        user_turns=["remove the cats"],
    )
    declined = await session.invoke("confirm_action", {}, user_turns=["remove the cats", "no"])

    assert declined["ok"] is False
    assert declined["error"] == "not_confirmed"
    assert clinic.pets() == PET_NAMES


@pytest.mark.parametrize(
    "sql, why",
    [
        ("DROP TABLE pets", "DROP"),
        ("CREATE TABLE evil (x integer)", "CREATE"),
        ("UPDATE pets SET name = 'A'; DROP TABLE owners", "exactly one"),
        ("SELECT * FROM pets", "SELECT"),
        ("DELETE FROM pets WHERE id IN (SELECT id FROM pets", "parse"),
    ],
)
async def test_a_write_that_is_not_one_data_change_is_refused_before_asking(http, clinic, sql, why):
    session = session_for(http, {"clinic": {"url": clinic.url, "allow_writes": True}})

    result = await session.invoke("write_database", {"database": "clinic", "sql": sql})

    assert result["ok"] is False
    assert "needs_confirmation" not in result
    assert why.lower() in result["message"].lower()
    assert session.pending_action is None
    assert clinic.pets() == PET_NAMES
    assert "evil" not in clinic.tables()


async def test_writes_to_a_read_only_database_are_refused(http, clinic):
    session = session_for(
        http,
        {"clinic": {"url": clinic.url}, "scratch": {"url": clinic.url, "allow_writes": True}},
    )

    result = await session.invoke(
        "write_database", {"database": "clinic", "sql": "DELETE FROM pets"}
    )

    assert result["ok"] is False
    assert result["error"] == "rejected"
    assert "only read" in result["message"]
    assert session.pending_action is None
    assert clinic.pets() == PET_NAMES


async def test_there_is_no_write_tool_without_allow_writes(http, clinic):
    session = session_for(http, {"clinic": {"url": clinic.url}})

    result = await session.invoke(
        "write_database", {"database": "clinic", "sql": "DELETE FROM pets"}
    )

    assert "write_database" not in session.tools
    assert "confirm_action" not in session.tools
    assert result["error"] == "unknown_tool"
    assert clinic.pets() == PET_NAMES


# --- Failures ---------------------------------------------------------------------------------


async def test_a_missing_sqlite_file_is_unavailable_and_not_created(http, tmp_path):
    missing = tmp_path / "gone.db"
    session = session_for(http, {"clinic": {"url": f"sqlite:///{missing}"}})

    result = await session.invoke("describe_database", {"database": "clinic"})

    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't open the clinic database.",
    }
    assert not missing.exists()


async def test_a_postgres_server_that_is_down_is_unavailable(http, logged):
    password = "s3cret-never-shown"
    url = f"postgresql://mindbot:{password}@127.0.0.1:{free_port()}/mindbot"
    reports: list = []
    session = session_for(http, {"clinic": {"url": url}}, reports)

    result = await session.invoke("query_database", {"database": "clinic", "sql": "SELECT 1"})

    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the clinic database.",
    }
    assert any("couldn't connect to the clinic database" in line for line in logged)
    everything = " ".join(logged) + repr(reports)
    assert password not in everything


async def test_a_wrong_password_is_never_shown(http, pg_server, logged):
    wrong = "Wr0ng-pass-1234"
    url = pg_server.url.replace(pg_server.password, wrong)
    reports: list = []
    session = session_for(http, {"clinic": {"url": url}}, reports)

    result = await session.invoke("query_database", {"database": "clinic", "sql": "SELECT 1"})

    assert result["error"] == "unavailable"
    assert any("password authentication failed" in line for line in logged)  # at DEBUG
    assert wrong not in " ".join(logged) + repr(result) + repr(reports)


async def test_a_password_setting_keeps_it_out_of_the_url(http, pg_server, logged):
    url = f"postgresql://{pg_server.user}@127.0.0.1:{pg_server.port}/{pg_server.dbname}"
    session = session_for(http, {"clinic": {"url": url, "password": pg_server.password}})

    result = await session.invoke(
        "query_database", {"database": "clinic", "sql": "SELECT current_user AS who"}
    )
    bad = await session.invoke(
        "query_database",
        {"database": "clinic", "sql": f"SELECT '{pg_server.password}'::integer"},
    )

    assert result["result"]["rows"] == [{"who": "mindbot"}]
    assert bad["error"] == "bad_arguments"
    assert pg_server.password not in bad["message"]  # the server echoes the value; we scrub it
    assert "***" in bad["message"]
    assert pg_server.password not in " ".join(logged)


def test_the_postgres_server_is_stopped_by_pid():
    with postgres_server() as server:
        pid = server.pid
        assert server.query("SELECT 1") == [(1,)]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not Path(server.socket_dir).exists()
