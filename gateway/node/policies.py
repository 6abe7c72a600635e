"""A centre's Cedar policy as published on chain, and the decision log of every evaluation.

The gateway serves only the policy whose (policy, schema) hashes are the latest its
centre published on chain (`Consortium.publishPolicy`): it refuses to start otherwise,
and follows a newly published version without a restart. Every evaluation, allow or
deny, becomes an entry of the decision log (ledger.decisions), stored before the answer
is given; each epoch's log is committed by its Merkle root in the centre's anchor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from auth.policy import Decision, PolicyEngine, PolicyError, Subject
from gateway.node.errors import Forbidden, Invalid, NotFound, TooManyRequests, Unavailable
from gateway.node.ratelimit import RateLimit, SharedRateLimit, network_key
from gateway.store import NewDecision, Store, StoreError
from ledger import decisions
from ledger.index import EventIndex, PolicyInfo
from ledger.policies import policy_hash, read_text, schema_hash
from ledger.primitives.hex import to_hex
from ledger.records import Domain
from ledger.signed_decisions import sign_entry

log = logging.getLogger(__name__)

PUBLISH = "xcentre policy publish --chain URL --deployment FILE --key-file FILE --policy FILE [--schema FILE]"


class PolicyStartError(RuntimeError):
    """The gateway may not serve with the policy in its files: the chain does not say it is this centre's."""


class PolicyNotPublished(PolicyStartError):
    """The centre has published no policy on chain."""


class PolicyMismatch(PolicyStartError):
    """The policy (or schema) in the files is not the one the centre last published on chain."""


class PolicyRefused(Forbidden):
    """The policy denies the request: `decision` is the id of its entry in the decision log (0x-hex),
    `entry` the entry and `signature` the centre's signature of it (ledger.signed_decisions)."""

    def __init__(self, message: str, *, reasons: list[str], decision: str, entry: dict, signature: str) -> None:
        super().__init__(message, reasons=reasons)
        self.decision, self.entry, self.signature = decision, entry, signature


@dataclass(frozen=True)
class PolicyFiles:
    """Where the centre keeps its policy text and, optionally, its Cedar schema."""

    policy: Path
    schema: Path | None = None

    def read(self) -> tuple[str, str | None]:
        """The texts exactly as their bytes say, so their hashes are the files' sha256 (PolicyError if unreadable)."""
        try:
            return read_text(self.policy), None if self.schema is None else read_text(self.schema, "schema")
        except OSError as exc:
            raise PolicyError(f"the policy files cannot be read: {exc}") from None


@dataclass(frozen=True)
class Served:
    """The policy in force here: its parsed engine and the on-chain version it is."""

    engine: PolicyEngine
    info: PolicyInfo


class PolicyKeeper:
    """The policy this gateway serves, always the latest version its centre published on chain.

    `start` refuses (PolicyStartError) unless the files are that version; `refresh`, each
    housekeeping round, re-reads the files when the chain has a new version and swaps the
    engine once they match; until then `current` refuses (503), naming both hashes.
    """

    def __init__(self, name: str, index: EventIndex, store: Store, files: PolicyFiles) -> None:
        self.name = name
        self.index = index
        self.store = store
        self.files = files
        self._lock = threading.Lock()
        self._served: Served | None = None
        self._pending: str | None = None  # why the latest version on chain is not served yet

    def start(self) -> None:
        """Serve the files' policy, or raise PolicyNotPublished / PolicyMismatch (the gateway does not start)."""
        latest = self.index.policy(self.name)
        policy, schema = self.files.read()
        if latest is None:
            raise PolicyNotPublished(
                f"{self.name} has published no policy on chain, so its gateway does not serve: publish "
                f"{self.files.policy} (policy hash {to_hex(policy_hash(policy))}, schema hash "
                f"{to_hex(schema_hash(schema))}) with `{PUBLISH}`, then start again"
            )
        mismatch = self._mismatch(latest, policy, schema)
        if mismatch:
            raise PolicyMismatch(
                mismatch + f"; publish the files with `{PUBLISH}`, or restore version "
                f"{latest.version}'s text, then start again"
            )
        self._serve(PolicyEngine(policy, schema), latest, policy, schema)

    def refresh(self) -> None:
        """Follow the chain: a new latest version is served as soon as the files hold it (no restart)."""
        latest = self.index.policy(self.name)
        served = self._served
        if latest is None or (served is not None and latest.version == served.info.version):
            return
        try:
            policy, schema = self.files.read()
            problem = self._mismatch(latest, policy, schema)
            if problem is None:
                self._serve(PolicyEngine(policy, schema), latest, policy, schema)
                log.info("%s: now serving policy version %d", self.name, latest.version)
                return
        except PolicyError as exc:
            problem = f"the policy files do not give {self.name}'s policy version {latest.version}: {exc}"
        if problem != self._pending:
            log.warning("%s: %s; quotes and submissions are refused until the files hold it", self.name, problem)
        with self._lock:
            self._pending = problem

    def current(self) -> Served:
        """The policy to evaluate with now; Unavailable (503) while the files lag the chain's latest version."""
        with self._lock:
            served, pending = self._served, self._pending
        if served is None:
            raise Unavailable(f"{self.name}'s gateway has not loaded its policy yet")
        if pending is not None:
            raise Unavailable(f"{self.name} cannot decide access now: {pending}; try again later")
        return served

    def text(self, version: int | None = None) -> tuple[PolicyInfo, str, str | None] | None:
        """A version of this centre's policy (None: the one served) with its text, if this gateway served it."""
        info = self._served.info if version is None and self._served else self.index.policy(self.name, version)
        if info is None:
            return None
        stored = self.store.policy_text(info.policy_hash, info.schema_hash)
        if stored is None or policy_hash(stored[0]) != info.policy_hash or schema_hash(stored[1]) != info.schema_hash:
            return None
        return info, stored[0], stored[1]

    def view(self, version: int | None = None) -> dict:
        """GET /v1/policy[/{version}]: the version's on-chain hashes and its texts (404 if never served here)."""
        found = self.text(version)
        if found is None:
            which = "no policy yet" if version is None else f"never served policy version {version}"
            raise NotFound(f"{self.name}'s gateway has {which}; `xcentre policy show` lists the versions on chain")
        info, policy, schema = found
        return {
            "centre": self.name,
            "version": info.version,
            "policy_hash": to_hex(info.policy_hash),
            "schema_hash": to_hex(info.schema_hash),
            "published_at": info.published_at,
            "policy": policy,
            "schema": schema,
        }

    def _mismatch(self, latest: PolicyInfo, policy: str, schema: str | None) -> str | None:
        have = (policy_hash(policy), schema_hash(schema))
        if have == (latest.policy_hash, latest.schema_hash):
            return None
        return (
            f"the policy files ({self.files.policy}{', ' + str(self.files.schema) if self.files.schema else ''}) "
            f"are not {self.name}'s policy version {latest.version} on chain: the files hash to policy "
            f"{to_hex(have[0])}, schema {to_hex(have[1])}; the chain has policy {to_hex(latest.policy_hash)}, "
            f"schema {to_hex(latest.schema_hash)}"
        )

    def _serve(self, engine: PolicyEngine, info: PolicyInfo, policy: str, schema: str | None) -> None:
        with self._lock:
            self._served, self._pending = Served(engine, info), None
        try:  # kept for GET /v1/policy/{version}; deciding with the version on chain comes first
            self.store.add_policy_text(info.policy_hash, info.schema_hash, policy, schema)
        except StoreError as exc:
            log.warning("%s: the texts of policy version %d are not kept: %s", self.name, info.version, exc)


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: Cedar's decision and its log entry, not stored yet."""

    decision: Decision
    entry: NewDecision

    @property
    def id(self) -> str:
        return to_hex(self.entry.id)


#: How often one principal may have the policy decide for it: a burst of DECISION_BURST, then
#: DECISIONS_PER_SECOND. Each decision is a durable entry; a person never asks this fast.
DECISIONS_PER_SECOND = 10.0
DECISION_BURST = 100
#: And for all the pseudonymous (presented) sessions of one network address together: a person who signs on
#: again gets a fresh pseudonym, so only the address bounds them (a campus behind one address shares it).
CLIENT_DECISIONS_PER_SECOND = 20.0
CLIENT_DECISION_BURST = 200


class DecisionDesk:
    """Evaluates requests with the served policy; each evaluation is one decision-log entry.

    `limit` bounds each principal's evaluations (429 past it, before anything is evaluated or
    stored), so no session can grow the log faster than DECISIONS_PER_SECOND.
    """

    def __init__(
        self,
        name: str,
        keeper: PolicyKeeper,
        store: Store,
        account: LocalAccount,
        domain: Domain,
        limit: RateLimit | SharedRateLimit | None = None,
        client_limit: RateLimit | SharedRateLimit | None = None,
    ) -> None:
        self.name = name
        self.keeper = keeper
        self.store = store
        self.account = account  # signs each refusal's entry, for the refused user to hold
        self.domain = domain
        self.limit = limit or RateLimit(DECISIONS_PER_SECOND, DECISION_BURST)
        self.client_limit = client_limit or RateLimit(CLIENT_DECISIONS_PER_SECOND, CLIENT_DECISION_BURST)

    def evaluate(
        self,
        *,
        kind: str,
        request: bytes,
        subject: Subject,
        resource: Mapping[str, Any],
        context: Mapping[str, Any],
        now: int,
        client: str | None = None,
    ) -> Evaluated:
        """Decide `submit` on the resource, from the very Cedar request the entry records (so it re-evaluates).

        `client`: the network address of a pseudonymous session, whose decisions are bounded with those of
        every other pseudonymous session from there (an IPv6 /64 is one address: ratelimit.network_key)."""
        self._admit(self.limit, subject.principal, "one principal")
        if client is not None:
            self._admit(self.client_limit, network_key(client), "the presented sessions of one network address")
        served = self.keeper.current()
        try:
            cedar = served.engine.request(subject, "submit", resource, context)
            decision = served.engine.decide_request(cedar)
        except PolicyError as exc:  # a value Cedar cannot hold (an attribute the issuer spelt oddly)
            raise Invalid(f"{self.name}'s policy cannot evaluate this request: {exc}; nothing was stored") from None
        for error in decision.errors:
            log.warning("policy evaluation error at %s: %s", self.name, error)
        entry = decisions.new_entry(
            centre=self.name,
            time=now,
            kind=kind,
            request=request,
            cedar=cedar,
            decision=decision,
            policy_version=served.info.version,
            policy_hash=served.info.policy_hash,
        )
        return Evaluated(decision, NewDecision.of(entry))

    def _admit(self, limit: RateLimit | SharedRateLimit, key: str, whose: str) -> None:
        wait = limit.take(key)
        if wait is not None:
            raise TooManyRequests(
                f"{self.name} decides at most {limit.rate:g} requests a second for {whose} (after a burst of "
                f"{limit.burst}): nothing was evaluated or stored; try again in {wait:.1f} s",
                retry_after=wait,
            )

    def refuse(self, evaluated: Evaluated) -> PolicyRefused:
        """Store a deny's entry (and nothing else), then the 403 with the policy's reasons, the entry and the
        centre's signature of it."""
        self.keep(evaluated)
        new = evaluated.entry
        return PolicyRefused(
            f"{self.name} does not accept this job (decision {evaluated.id})",
            reasons=[f"{self.name}: {reason}" for reason in evaluated.decision.reasons],
            decision=evaluated.id,
            entry=new.entry,
            signature=to_hex(sign_entry(new.digest, self.domain, self.account.key)),
        )

    def keep(self, evaluated: Evaluated) -> None:
        """Store the entry on its own, durably: a deny, a quote, or a submission refused after the policy allowed it."""
        self.store.log_decision(evaluated.entry)
