"""The home's group book: who registered each tracing key, and which openings it identified.

A member joins a project's group with a tracing key T (48-byte compressed
G1 point) that only they can prove knowledge of; the home keeps T with the
member's uid, enrolment id and project here, never on chain. T is unique: a
key registered by one member can never be made to name another. When the
supervisors open a group signature on chain to T, the home maps T back to
its member and keeps that identification here too (the chain keeps its
enrolment id): both are on the record, and nothing else links a member to
what they signed (the anonymous grants in the hold book name only the
project).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.store import checks
from gateway.store.base import StoreBase
from gateway.store.errors import StoreError

__all__ = ["GroupBook", "Identification", "IdentificationConflict", "Member", "TracingKeyTaken"]

TRACING_KEY_BYTES = 48


class TracingKeyTaken(StoreError):
    """The tracing key is registered already, by another member or for another project."""


class IdentificationConflict(StoreError):
    """The opening was identified before, to another tracing key."""


@dataclass(frozen=True)
class Member:
    uid: str
    enrolment: bytes
    project: str
    tracing_key: bytes
    joined_at: int
    expires_at: int
    """When the last credential issued for this key expires."""


@dataclass(frozen=True)
class Identification:
    opening: int
    tracing_key: bytes
    uid: str
    enrolment: bytes
    project: str
    identified_at: int


def _tracing_key(value: object) -> str:
    if not isinstance(value, (bytes, bytearray)) or len(value) != TRACING_KEY_BYTES:
        raise StoreError(f"a tracing key is {TRACING_KEY_BYTES} bytes (a compressed G1 point), got {value!r:.40}")
    return bytes(value).hex()


def _member(row: sqlite3.Row) -> Member:
    return Member(
        uid=row["uid"],
        enrolment=bytes.fromhex(row["enrolment"]),
        project=row["project"],
        tracing_key=bytes.fromhex(row["tracing_key"]),
        joined_at=int(row["joined_at"]),
        expires_at=int(row["expires_at"]),
    )


def _identification(row: sqlite3.Row) -> Identification:
    return Identification(
        opening=int(row["opening"]),
        tracing_key=bytes.fromhex(row["tracing_key"]),
        uid=row["uid"],
        enrolment=bytes.fromhex(row["enrolment"]),
        project=row["project"],
        identified_at=int(row["identified_at"]),
    )


class GroupBook(StoreBase):
    """Group members and identifications of a gateway's store (gateway.db), through its connections."""

    def __init__(self, store: StoreBase) -> None:
        self._share(store)

    def add_member(
        self, uid: str, enrolment: bytes, project: str, tracing_key: bytes, expires_at: int
    ) -> tuple[Member, bool]:
        """Register `tracing_key` for the member, durably. Returns (member, created).

        The same member, project and key again is a renewal (a retry, or a fresh credential for a key the
        member keeps): the row's expiry moves to the later one, created=False. The key registered by anyone
        else, or for another project, is TracingKeyTaken; nothing is written.
        """
        checks.text("uid", uid, max_len=256)
        checks.text("project", project, max_len=256)
        enrolment_hex = checks.hex32("enrolment", enrolment)
        key = _tracing_key(tracing_key)
        checks.natural("expires_at", expires_at)
        with self._tx() as db:
            row = db.execute("SELECT * FROM group_members WHERE tracing_key = ?", (key,)).fetchone()
            if row is not None:
                if (row["uid"], row["project"]) != (uid, project):
                    raise TracingKeyTaken("this tracing key is already registered")
                db.execute(
                    "UPDATE group_members SET expires_at = MAX(expires_at, ?) WHERE tracing_key = ?", (expires_at, key)
                )
                created = False
            else:
                db.execute(
                    "INSERT INTO group_members (uid, enrolment, project, tracing_key, joined_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (uid, enrolment_hex, project, key, self._now(), expires_at),
                )
                created = True
            row = db.execute("SELECT * FROM group_members WHERE tracing_key = ?", (key,)).fetchone()
        return _member(row), created

    def member(self, tracing_key: bytes) -> Member | None:
        """Who registered this tracing key, if anyone."""
        rows = self._read("SELECT * FROM group_members WHERE tracing_key = ?", (_tracing_key(tracing_key),))
        return _member(rows[0]) if rows else None

    def members_of(self, uid: str) -> list[Member]:
        """A user's registered keys, oldest first."""
        rows = self._read("SELECT * FROM group_members WHERE uid = ? ORDER BY rowid", (uid,))
        return [_member(r) for r in rows]

    def identify(self, opening: int, member: Member) -> tuple[Identification, bool]:
        """Keep that opening `opening` revealed `member`'s key, durably. Returns (identification, created).

        The same opening again returns what was kept (created=False); the opening kept for another key is
        IdentificationConflict (an opening's key never changes on chain).
        """
        checks.positive_int("opening", opening)
        key = _tracing_key(member.tracing_key)
        with self._tx() as db:
            row = db.execute("SELECT * FROM identifications WHERE opening = ?", (opening,)).fetchone()
            if row is not None:
                if row["tracing_key"] != key:
                    raise IdentificationConflict(f"opening {opening} was identified before, to another tracing key")
                return _identification(row), False
            db.execute(
                "INSERT INTO identifications (opening, tracing_key, uid, enrolment, project, identified_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (opening, key, member.uid, member.enrolment.hex(), member.project, self._now()),
            )
            row = db.execute("SELECT * FROM identifications WHERE opening = ?", (opening,)).fetchone()
        return _identification(row), True

    def identification(self, opening: int) -> Identification | None:
        rows = self._read("SELECT * FROM identifications WHERE opening = ?", (checks.positive_int("opening", opening),))
        return _identification(rows[0]) if rows else None
