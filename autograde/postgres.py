"""A throwaway PostgreSQL server on loopback, for trying a shared gradebook on one machine
and for the tests (a real course points ``--db`` at its own server instead).

    python -m autograde.postgres start DIR     # initdb DIR (once), start; prints the URL
    python -m autograde.postgres stop DIR

It uses the server binaries of Debian's ``postgresql`` package (``apt install postgresql``;
found under /usr/lib/postgresql/*/bin, on PATH, or in $LORALAB_PG_BIN). ``initdb`` refuses
to run as root: as root the server runs as the ``postgres`` user, which then owns DIR. It
listens on 127.0.0.1 only, trusts local connections (no password: do not use it for real
student data on a shared machine) and keeps everything in DIR.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DATABASE = "loralab"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the server would not start."""


def bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    candidates = [os.environ.get("LORALAB_PG_BIN", "")]
    which = shutil.which("pg_ctl")
    candidates += [str(Path(which).parent) if which else ""]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in filter(None, candidates):
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PostgresUnavailable("no PostgreSQL server binaries found (Debian/Ubuntu: apt install "
                              "postgresql; or set LORALAB_PG_BIN to the folder of initdb)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """A server whose data lives in ``folder`` (created by :meth:`start` when empty)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).resolve()
        self.data = self.folder / "data"
        self.bin = bindir()
        self.as_postgres = os.geteuid() == 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self.as_postgres:
            cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True,
                              cwd=str(self.folder))

    @property
    def port(self) -> int:
        return int((self.folder / "port").read_text().strip())

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> str:
        """initdb (first time), start the server, create the course database; its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root needs the 'postgres' user (the "
                                          "postgresql package creates it)") from None
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            if self._run("test", "-w", str(self.folder), check=False).returncode != 0:
                raise PostgresUnavailable(f"the postgres user cannot reach {self.folder} (a "
                                          f"folder above it is private); use one under /tmp")
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--no-instructions")
        port = _free_port()
        log = self.folder / "server.log"
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w",
                      "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k {self.data}", "start")
        except subprocess.CalledProcessError as error:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise PostgresUnavailable(f"the server did not start: {error.stderr or tail}") from error
        (self.folder / "port").write_text(f"{port}\n")
        self._create_database()
        return self.url

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                       dbname="postgres", autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE}")
        conn.close()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                      "stop", check=False)

    def __enter__(self) -> "LocalPostgres":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m autograde.postgres {start,stop} DIR", file=sys.stderr)
        return 2
    try:
        server = LocalPostgres(argv[1])
        if argv[0] == "start":
            print(server.start())
        else:
            server.stop()
    except PostgresUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
