"""The grading runs' bookkeeping, kept in the gradebook's own database.

Two tables beside nbgrader's (SQLite or PostgreSQL, whatever the gradebook URL names):

    loralab_results  (assignment, student) -> how its last grading ended, and the
                     *fingerprint* of what was graded (submitted files, the assignment's
                     source, the grading configuration); one row, replaced in one transaction
    loralab_locks    assignment -> the one grading run allowed on it at a time (owner, host,
                     pid, heartbeat)

A run writes a submission's row right after the gradebook holds its scores, so a run that is
killed keeps every result it finished; the next run grades only what has no row or a
different fingerprint. Rows are written by the coordinator only, each in its own
transaction: two runs (of different assignments) never read-modify-write a shared file.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Iterator

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

METADATA = MetaData()
RESULTS = Table(
    "loralab_results", METADATA,
    Column("assignment", String(128), primary_key=True),
    Column("student", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # "" : no result to keep (regrade)
    Column("status", String(64), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("autograded", Boolean, nullable=False, default=False),
    Column("flags", Text, nullable=False, default="[]"),  # JSON list of strings
    Column("sandbox", Text, nullable=False, default=""),
    Column("seconds", Float),
    Column("timing", Text, nullable=False, default="{}"),  # JSON: worker / judge seconds
    Column("at", String(32), nullable=False),
    Column("run", String(36), nullable=False),
)
LOCKS = Table(
    "loralab_locks", METADATA,
    Column("assignment", String(128), primary_key=True),
    Column("owner", String(36), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", String(32), nullable=False),
    Column("heartbeat", Float, nullable=False),
)

#: A lock whose holder has not beaten for this long (seconds) is taken over.
STALE_AFTER = 120.0
#: How often the holder beats.
HEARTBEAT = 15.0


class Busy(RuntimeError):
    """Another grading run holds the assignment."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """The two tables in the database at ``url`` (created when missing)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url, future=True)
        METADATA.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- results ------------------------------------------------------------------------
    def results(self, assignment: str | None = None) -> dict[str, dict[str, dict]]:
        """{assignment: {student: row}} (every assignment, or one)."""
        query = select(RESULTS)
        if assignment is not None:
            query = query.where(RESULTS.c.assignment == assignment)
        out: dict[str, dict[str, dict]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                info = dict(row)
                info["flags"] = json.loads(info["flags"] or "[]")
                info["timing"] = json.loads(info["timing"] or "{}")
                out.setdefault(info["assignment"], {})[info["student"]] = info
        return out

    def put(self, assignment: str, student: str, *, fingerprint: str, status: str,
            reason: str = "", autograded: bool = False, flags: list[str] | None = None,
            sandbox: str = "", seconds: float | None = None, timing: dict | None = None,
            run: str = "") -> None:
        """Replace the row of one submission (one transaction)."""
        row = dict(assignment=assignment, student=student, fingerprint=fingerprint,
                   status=status, reason=reason or "", autograded=bool(autograded),
                   flags=json.dumps(list(flags or [])), sandbox=sandbox or "",
                   seconds=seconds, timing=json.dumps(timing or {}), at=now(), run=run)
        with self.engine.begin() as conn:
            conn.execute(delete(RESULTS).where(RESULTS.c.assignment == assignment,
                                               RESULTS.c.student == student))
            conn.execute(insert(RESULTS).values(**row))

    def add_flag(self, assignment: str, student: str, flag: str, replace_prefix: str) -> None:
        """Add ``flag`` to a row, dropping earlier flags that start with ``replace_prefix``."""
        with self.engine.begin() as conn:
            where = (RESULTS.c.assignment == assignment, RESULTS.c.student == student)
            old = conn.execute(select(RESULTS.c.flags).where(*where)).scalar_one_or_none()
            if old is None:
                return
            flags = [f for f in json.loads(old) if not f.startswith(replace_prefix)] + [flag]
            conn.execute(update(RESULTS).where(*where).values(flags=json.dumps(flags)))

    # -- one run per assignment ---------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, assignment: str) -> Iterator[str]:
        """Hold ``assignment`` for one grading run (yields the run id); raises Busy when a
        live run holds it. A holder that died (its pid is gone on this host, or it has not
        beaten for STALE_AFTER seconds) is taken over."""
        owner = str(uuid.uuid4())
        self._acquire(assignment, owner)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(assignment, owner, stop),
                                name=f"ledger-heartbeat-{assignment}", daemon=True)
        beat.start()
        try:
            yield owner
        finally:
            stop.set()
            beat.join()
            with self.engine.begin() as conn:
                conn.execute(delete(LOCKS).where(LOCKS.c.assignment == assignment,
                                                 LOCKS.c.owner == owner))

    def holder(self, assignment: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(LOCKS).where(LOCKS.c.assignment == assignment)
                               ).mappings().first()
        return dict(row) if row else None

    def _acquire(self, assignment: str, owner: str) -> None:
        row = dict(assignment=assignment, owner=owner, host=socket.gethostname(),
                   pid=os.getpid(), started=now(), heartbeat=time.time())
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(LOCKS).values(**row))
                return
            except IntegrityError:
                held = self.holder(assignment)
                if held is None:
                    continue  # released meanwhile
                if not self._stale(held):
                    raise Busy(
                        f"another grading run of {assignment} is in progress (pid "
                        f"{held['pid']} on {held['host']}, started {held['started']}): "
                        f"one run per assignment at a time; wait for it to finish (a run "
                        f"that died is taken over once it has been silent for "
                        f"{STALE_AFTER:.0f} s)") from None
                with self.engine.begin() as conn:  # only one taker deletes it
                    conn.execute(delete(LOCKS).where(LOCKS.c.assignment == assignment,
                                                     LOCKS.c.owner == held["owner"]))
        raise Busy(f"could not take the grading lock of {assignment}")

    @staticmethod
    def _stale(held: dict) -> bool:
        if held["host"] == socket.gethostname() and not _alive(held["pid"]):
            return True
        return time.time() - held["heartbeat"] > STALE_AFTER

    def _beat(self, assignment: str, owner: str, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat only ages the lock
                with self.engine.begin() as conn:
                    conn.execute(update(LOCKS).where(LOCKS.c.assignment == assignment,
                                                     LOCKS.c.owner == owner)
                                 .values(heartbeat=time.time()))
