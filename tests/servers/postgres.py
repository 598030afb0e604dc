"""A real PostgreSQL server for tests, from the Debian ``postgresql`` package.

``postgres_server()`` initialises a throwaway cluster in a temporary folder, starts ``postgres``
on a free loopback port (and a Unix socket in the same folder), creates a database and a
password-protected role that owns it, and yields a ``PostgresServer``::

    with postgres_server() as pg:
        pg.execute("CREATE TABLE pets (name text)")   # as the superuser, over the socket
        settings = {"url": pg.url}                      # postgresql://mindbot:…@127.0.0.1:PORT/mindbot
        assert pg.query("SELECT count(*) FROM pets") == [(0,)]

PostgreSQL refuses to run as root, so when the tests run as root ``initdb`` and ``postgres``
run as the ``postgres`` system user. The server is stopped by its PID (SIGINT: a fast shutdown,
then SIGKILL) and the folder removed. Without the binaries the calling test is skipped.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mindbot.harness import free_port

from servers import stop_process

BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"))
SYSTEM_USER = "postgres"


@dataclass
class PostgresServer:
    """A running test server.

    Args:
        url: ``postgresql://USER:PASSWORD@127.0.0.1:PORT/DBNAME`` for the test role.
        host: The loopback address it listens on.
        port: Its TCP port.
        dbname: The test database.
        user: The test role (owner of the database, not a superuser).
        password: The test role's password.
        socket_dir: The folder of its Unix socket (the superuser logs in there, trusted).
        pid: The ``postgres`` process id.
        log: Its log file.
    """

    url: str
    host: str
    port: int
    dbname: str
    user: str
    password: str
    socket_dir: Path
    pid: int
    log: Path
    _process: subprocess.Popen = field(repr=False)

    def connect(self, *, superuser: bool = True, dbname: str | None = None) -> Any:
        """A new ``psycopg.Connection`` (autocommit), as the superuser or the test role."""
        import psycopg

        if superuser:
            return psycopg.connect(
                host=str(self.socket_dir),
                port=self.port,
                user=SYSTEM_USER,
                dbname=dbname or self.dbname,
                autocommit=True,
            )
        return psycopg.connect(self.url, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Run a statement (or several, without params) as the superuser."""
        with self.connect() as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """The rows of a query, run as the superuser: to check what the server stored."""
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop the server: SIGINT (fast shutdown) by PID, then SIGKILL."""
        _stop(self._process)


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, if installed."""
    for folder in BIN_DIRS:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


@contextmanager
def postgres_server(
    *, dbname: str = "mindbot", user: str = "mindbot", password: str | None = None
) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server for one test (or module), then stop it and delete its files.

    Args:
        dbname: The database to create.
        user: The login role to create; it owns ``dbname``.
        password: That role's password; default: a random one.
    """
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(f"PostgreSQL is not installed (no initdb/postgres in {BIN_DIRS[0]})")
    run_as = _system_user()
    password = password or f"pw-{secrets.token_hex(8)}"
    root = Path(tempfile.mkdtemp(prefix="mindbot-pg-"))
    data, log = root / "data", root / "postgres.log"
    process: subprocess.Popen | None = None
    try:
        data.mkdir()
        log.touch()
        if run_as is not None:
            # The server's user must own its files and reach them through every parent folder.
            for path in (root, data, log):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
            _check_traversable(root, run_as)
        _run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                SYSTEM_USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            run_as,
        )
        port = free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    str(binaries / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    # A throwaway cluster: durability only slows the tests down.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(run_as),
                **_as_user(run_as),
            )
        _wait_ready(binaries, port, process, log)
        server = PostgresServer(
            url=f"postgresql://{user}:{password}@127.0.0.1:{port}/{dbname}",
            host="127.0.0.1",
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            socket_dir=root,
            pid=process.pid,
            log=log,
            _process=process,
        )
        with server.connect(dbname="postgres") as conn:
            # Identifiers and the password are the caller's constants, not user input.
            conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")  # type: ignore[arg-type]
            conn.execute(f"CREATE DATABASE {dbname} OWNER {user}")  # type: ignore[arg-type]
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _system_user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.skip(f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL")


def _as_user(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _environment(account: pwd.struct_passwd | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    env["HOME"] = account.pw_dir if account is not None else os.environ.get("HOME", "/tmp")
    return env


def _check_traversable(folder: Path, account: pwd.struct_passwd) -> None:
    for parent in folder.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.stat().st_uid != account.pw_uid:
            pytest.skip(f"{parent} is not traversable by {account.pw_name!r}: set TMPDIR elsewhere")


def _run(command: list[str], account: pwd.struct_passwd | None) -> None:
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_environment(account),
        cwd="/",
        timeout=120,
        **_as_user(account),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed:\n{done.stdout}\n{done.stderr}")


def _wait_ready(binaries: Path, port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited early:\n{log.read_text()[-3000:]}")
        ready = subprocess.run(
            [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            timeout=10,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"postgres did not start within 30 s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    stop_process(process, signum=signal.SIGINT, grace=15)  # SIGINT: PostgreSQL's fast shutdown
