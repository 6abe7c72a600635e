"""The policy texts a gateway served under, by hash: what it answers `GET /v1/policy/{version}` with.

The chain holds only hashes (ledger.policies); the texts live here, checked
against the hashes they are stored under, so this gateway never serves a text
under a hash it does not have.
"""

from __future__ import annotations

from typing import Any

from gateway.store import checks
from gateway.store.base import StoreBase
from gateway.store.errors import StoreError
from ledger.policies import policy_hash as sha256_of_policy
from ledger.policies import schema_hash as sha256_of_schema

__all__ = ["PolicyTexts"]


def _text(name: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"the {name} must be a non-empty string, got {value!r:.80}")
    return value


class PolicyTexts(StoreBase):
    """Policy and schema texts by their sha256 pair, as a version on chain names them (mixed into `Store`)."""

    def add_policy_text(self, policy_hash: bytes, schema_hash: bytes, policy: str, schema: str | None) -> None:
        """Keep the texts under their hashes, durably; the same texts again change nothing.

        StoreError if a text does not hash to the hash given. A new schema with the
        same policy is another pair, kept beside the first: texts are checked against
        their hashes, so a stored pair can never be given other texts.
        """
        key, schema_key = checks.hex32("policy_hash", policy_hash), checks.hex32("schema_hash", schema_hash)
        policy_text, schema_text = _text("policy text", policy), _text("schema text", schema, optional=True)
        assert policy_text is not None
        for what, given, actual in (
            ("policy text", key, sha256_of_policy(policy_text).hex()),
            (
                "schema text" if schema_text is not None else "absent schema",
                schema_key,
                sha256_of_schema(schema_text).hex(),
            ),
        ):
            if given != actual:
                raise StoreError(f"the {what} hashes to 0x{actual}, not the 0x{given} it is to be stored under")
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO policy_texts (hash, schema, schema_hash, policy, stored_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, schema_text, schema_key, policy_text, self._now()),
            )

    def policy_text(self, policy_hash: bytes | str, schema_hash: bytes | str) -> tuple[str, str | None] | None:
        """(policy, schema or None) stored under this pair of hashes, or None."""
        rows = self._read(
            "SELECT policy, schema FROM policy_texts WHERE hash = ? AND schema_hash = ?",
            (checks.hex32("policy_hash", policy_hash), checks.hex32("schema_hash", schema_hash)),
        )
        return (rows[0]["policy"], rows[0]["schema"]) if rows else None
