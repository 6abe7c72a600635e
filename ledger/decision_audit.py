"""Auditing one epoch of a centre's decision log against the chain, trusting the centre for nothing.

Given the entries the centre served, the root and count it anchored, its policy
versions as the chain holds them and the policy texts (fetched from anyone), the
audit checks that

- the entries are the anchored log: their root and count are the anchored ones;
- each text is the published one (its sha256 and its schema's are the chain's);
- each entry names the version in force at its time, with that version's hash
  (`grace` seconds either side: a gateway picks a new version up at its next round),
  and is dated no later than the anchor that committed its log (`anchored_at` + grace);
- each entry is a request the gateway makes: the parts it sets itself (action "submit",
  its own name, the principal's id and home, the home of its groups, the hour of the
  entry's time) agree, since Cedar reads only the request and re-evaluating a forged
  one gives the forged decision;
- each decision is the one the policy gives: every entry decided again with its
  version's text (Cedar is deterministic; `PolicyEngine.reevaluate`), same decision,
  same determining policies;
- each usage record names the submission's allow entry that admitted its job (of this
  log or, passed by the caller, of an earlier one): one record an allow, of the allowed
  principal's home, started no earlier than the allow (less `grace`, for the nodes' clocks).

Pure: the caller fetches everything; a malformed entry is a finding, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from auth.policy import CedarRequest, Decision, PolicyEngine, PolicyError
from ledger.decisions import DecisionLogError, cedar_request, check_entry, entry_digest, log_root
from ledger.ids import InvalidName, centre_id, centre_name
from ledger.policies import policy_hash, schema_hash
from ledger.primitives.hex import to_hex
from ledger.records import UsageRecord

KINDS = ("root", "count", "text", "version", "time", "decision", "record")
ACTION = "submit"
"""The one action a gateway asks its policy about (quotes and submissions alike)."""


class PublishedPolicy(Protocol):
    """A policy version as the chain holds it (`ledger.policies.PolicyVersion`, the index's `PolicyInfo`)."""

    @property
    def version(self) -> int: ...
    @property
    def policy_hash(self) -> bytes: ...
    @property
    def schema_hash(self) -> bytes: ...
    @property
    def published_at(self) -> int: ...


@dataclass(frozen=True)
class Finding:
    """One thing the audit found wrong.

    kind: one of KINDS; id: what it is about — an entry's id, a usage record's id (0x-hex),
    "version N" for a policy text, "#n" for the n-th entry when it has no readable id, or
    "" for the log as a whole.
    """

    kind: str
    id: str
    message: str


@dataclass(frozen=True)
class DecisionAudit:
    """The figures of one audit and its findings (in the order of KINDS, then of the log)."""

    entries: int
    allows: int
    denies: int
    reevaluated: int
    seconds: float
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


def audit_decisions(
    entries: Sequence[Any],
    anchored_root: bytes | None,
    anchored_count: int | None,
    versions: Sequence[PublishedPolicy],
    texts: Mapping[int, tuple[str, str | None]],
    records: Sequence[UsageRecord] = (),
    grace: int = 60,
    earlier_entries: Sequence[Any] | None = None,
    anchored_at: int | None = None,
    centre: str | None = None,
) -> DecisionAudit:
    """Audit one epoch's log (entries in the order served); see the module docstring.

    anchored_root/anchored_count: what the centre anchored for the epoch (None: nothing
    anchored); anchored_at: when (None: entries' times are not bounded by it). versions:
    every version the centre published. texts: version → (policy, schema or None).
    centre: whose log it is (None: not checked). earlier_entries: the entries of the
    centre's earlier logs that records name, each shown by the caller to be in its
    epoch's anchored log; a record naming an entry outside this log is reported only
    when they are given (None: not looked up) and lack it too.
    """
    start = time.perf_counter()
    found: dict[str, list[Finding]] = {kind: [] for kind in KINDS}
    digests, valid = _read(entries, found)
    _check_anchor(digests, anchored_root, anchored_count, len(entries), found)
    by_version = {v.version: v for v in versions}
    engines = _engines(by_version, texts, {v.entry["policy_version"] for v in valid}, found)
    in_force = [v for v in valid if _in_force(v.entry, by_version, grace, found)]
    for v in valid:
        _check_dated(v.entry, anchored_at, grace, found)
        _check_made_here(v.entry, centre, found)
    reevaluated = _decide_again(in_force, engines, found)
    earlier = None if earlier_entries is None else _by_digest(earlier_entries)
    _check_records(records, {v.digest: v.entry for v in valid}, earlier, grace, found)
    allows = sum(1 for v in valid if v.entry["decision"] == "allow")
    return DecisionAudit(
        entries=len(entries),
        allows=allows,
        denies=len(valid) - allows,
        reevaluated=reevaluated,
        seconds=time.perf_counter() - start,
        findings=tuple(f for kind in KINDS for f in found[kind]),
    )


class _Entry(NamedTuple):
    """A well-formed entry, its digest and the Cedar request it logged."""

    digest: bytes
    entry: dict
    cedar: CedarRequest


def _read(entries: Sequence[Any], found: dict[str, list[Finding]]) -> tuple[list[bytes] | None, list[_Entry]]:
    """Every entry's digest (None if one cannot be hashed) and the well-formed entries with theirs."""
    digests: list[bytes] | None = []
    valid = []
    for n, entry in enumerate(entries, start=1):
        label = _label(entry, n)
        try:
            digest = entry_digest(entry)
        except DecisionLogError as exc:
            found["decision"].append(Finding("decision", label, f"entry {label} cannot be hashed: {exc}"))
            digests = None
            continue
        if digests is not None:
            digests.append(digest)
        try:
            valid.append(_Entry(digest, entry, cedar_request(entry)))
        except DecisionLogError as exc:
            found["decision"].append(Finding("decision", label, f"entry {label} is not a decision log entry: {exc}"))
    return digests, valid


def _check_anchor(
    digests: list[bytes] | None,
    anchored_root: bytes | None,
    anchored_count: int | None,
    count: int,
    found: dict[str, list[Finding]],
) -> None:
    if anchored_root is None or anchored_count is None:
        found["root"].append(Finding("root", "", "the centre anchored no decision log for this epoch"))
        return
    if digests is None:
        found["root"].append(Finding("root", "", "the log's root cannot be computed: an entry cannot be hashed"))
    else:
        try:
            root = log_root(digests)
        except DecisionLogError as exc:
            found["root"].append(Finding("root", "", f"the log's root cannot be computed: {exc}"))
        else:
            if root != anchored_root:
                found["root"].append(
                    Finding(
                        "root",
                        "",
                        f"the entries served have root {to_hex(root)}, the centre anchored {to_hex(anchored_root)}: "
                        "this is not the log it committed to (an entry changed, added or dropped)",
                    )
                )
    if count != anchored_count:
        found["count"].append(
            Finding("count", "", f"the centre served {count} entries, it anchored a log of {anchored_count}")
        )


def _engines(
    by_version: Mapping[int, PublishedPolicy],
    texts: Mapping[int, tuple[str, str | None]],
    used: set[int],
    found: dict[str, list[Finding]],
) -> dict[int, PolicyEngine]:
    """An engine for each version whose text is the published one and valid Cedar."""
    engines = {}
    for version in sorted(set(texts) | (used & set(by_version))):
        label = f"version {version}"
        published = by_version.get(version)
        if published is None:
            found["text"].append(Finding("text", label, f"a text was given for policy {label}, never published"))
            continue
        if version not in texts:
            found["text"].append(
                Finding(
                    "text",
                    label,
                    f"no text for policy {label}: its entries cannot be decided again; fetch it from the "
                    "centre's gateway (GET /v1/policy/{version}) or from its operator",
                )
            )
            continue
        policy, schema = texts[version]
        wrong = [
            f"the {what} hashes to sha256 {to_hex(got)}, the chain has {to_hex(want)}"
            for what, got, want in (
                ("policy text", policy_hash(policy), published.policy_hash),
                ("schema", schema_hash(schema), published.schema_hash),
            )
            if got != want
        ]
        if wrong:
            found["text"].append(
                Finding(
                    "text", label, f"the text given for policy {label} is not the published one: " + "; ".join(wrong)
                )
            )
            continue
        try:
            engines[version] = PolicyEngine(policy, schema)
        except PolicyError as exc:
            found["text"].append(Finding("text", label, f"policy {label} cannot be evaluated: {exc}"))
    return engines


def _in_force(
    entry: dict, by_version: Mapping[int, PublishedPolicy], grace: int, found: dict[str, list[Finding]]
) -> bool:
    """False (with a finding) for an entry naming no published version or another hash; a version
    not in force at the entry's time is a finding too, but the entry is still decided again by it."""
    eid, version, at = entry["id"], entry["policy_version"], entry["time"]
    published = by_version.get(version)
    if published is None:
        latest = max(by_version, default=0)
        found["version"].append(
            Finding("version", eid, f"entry {eid} names policy version {version}, never published (latest: {latest})")
        )
        return False
    if entry["policy_hash"] != to_hex(published.policy_hash):
        found["version"].append(
            Finding(
                "version",
                eid,
                f"entry {eid} names policy version {version} with hash {entry['policy_hash']}, "
                f"the chain has {to_hex(published.policy_hash)} for that version",
            )
        )
        return False
    following = by_version.get(version + 1)
    if published.published_at > at + grace:
        found["version"].append(
            Finding(
                "version",
                eid,
                f"entry {eid} was logged at {at}, before policy version {version} was published "
                f"(at {published.published_at}; grace {grace} s)",
            )
        )
    elif following is not None and following.published_at <= at - grace:
        found["version"].append(
            Finding(
                "version",
                eid,
                f"entry {eid} was logged at {at} under policy version {version}, but version {version + 1} "
                f"was in force from {following.published_at}, more than {grace} s before",
            )
        )
    return True


def _check_dated(entry: dict, anchored_at: int | None, grace: int, found: dict[str, list[Finding]]) -> None:
    """An entry dated after the anchor that committed its log was not decided when it says (backdating
    within the epoch goes unseen: nothing on chain dates a decision more finely than its epoch)."""
    if anchored_at is not None and entry["time"] > anchored_at + grace:
        eid = entry["id"]
        found["time"].append(
            Finding(
                "time",
                eid,
                f"entry {eid} is dated {entry['time']}, after the anchor that committed its log at {anchored_at} "
                f"(grace {grace} s): it was not decided when it says",
            )
        )


def _check_made_here(entry: dict, centre: str | None, found: dict[str, list[Finding]]) -> None:
    """A finding when the parts of the request the gateway sets itself (gateway/node/centre.py `_authorise`,
    `_groups`; the token checks' principal uid@home) are not what it sets: re-evaluating a request a centre
    forged gives the decision it forged, so only these tie the entry to a request the gateway made."""
    eid, at = entry["id"], entry["time"]
    principal, attrs = entry["principal"]["id"], entry["principal"]["attrs"]
    wrong = []
    if centre is not None and entry["centre"] != centre:
        wrong.append(f"it names centre {entry['centre']!r}, in the log of {centre!r}")
    if entry["action"] != ACTION:
        wrong.append(f"action is {entry['action']!r:.40}, the gateway asks only {ACTION!r}")
    if entry["resource"]["attrs"].get("centre") != entry["centre"]:
        wrong.append(
            f"resource.attrs.centre is {entry['resource']['attrs'].get('centre')!r:.40}, "
            f"not the entry's centre {entry['centre']!r}"
        )
    if attrs.get("principal") != principal:
        wrong.append(f"principal.attrs.principal is {attrs.get('principal')!r:.80}, not principal.id {principal!r:.80}")
    home = attrs.get("home")
    if not isinstance(home, str) or not home:
        wrong.append(f"principal.attrs.home is {home!r:.40}, not the principal's home centre")
    else:
        if "@" not in principal or principal.rpartition("@")[2] != home:
            wrong.append(
                f"principal.attrs.home is {home!r:.40}, but principal.id {principal!r:.80} is not of that home"
            )
        foreign = [g for g in entry["principal"]["groups"] if "@" in g and g.rpartition("@")[2] != home]
        if foreign:
            wrong.append(f"principal.groups {foreign!r:.120} are of another home than the principal's {home!r:.40}")
    hour = entry["context"].get("hour")
    expected = at // 3600 % 24  # time.gmtime(at).tm_hour, without its range limit
    if not isinstance(hour, int) or isinstance(hour, bool) or hour != expected:
        wrong.append(f"context.hour is {hour!r:.20}, the entry's time {at} is at hour {expected} UTC")
    if wrong:
        found["decision"].append(
            Finding("decision", eid, f"entry {eid} is not a request its gateway makes: " + "; ".join(wrong))
        )


def _decide_again(entries: list[_Entry], engines: Mapping[int, PolicyEngine], found: dict[str, list[Finding]]) -> int:
    """Decide every entry again with its version's policy; a finding for each that differs. Returns how many."""
    by_version: dict[int, list[_Entry]] = {}
    for e in entries:
        by_version.setdefault(e.entry["policy_version"], []).append(e)
    count = 0
    for version, logged in sorted(by_version.items()):
        engine = engines.get(version)
        if engine is None:
            continue  # reported with the texts
        for e, decision in zip(logged, _decisions(engine, [e.cedar for e in logged]), strict=True):
            count += 1
            message = _difference(e.entry, decision, version)
            if message:
                found["decision"].append(Finding("decision", e.entry["id"], message))
    return count


def _decisions(engine: PolicyEngine, reqs: list[CedarRequest]) -> list[Decision | str]:
    """Each request decided again, or why it cannot be (one at a time only if the batch fails)."""
    try:
        return list(engine.reevaluate(reqs))
    except PolicyError:
        out: list[Decision | str] = []
        for req in reqs:
            try:
                out.append(engine.decide_request(req))
            except PolicyError as exc:
                out.append(str(exc))
        return out


def _difference(entry: dict, decision: Decision | str, version: int) -> str | None:
    eid, logged, policies = entry["id"], entry["decision"], entry["policies"]
    if isinstance(decision, str):
        return f"entry {eid} cannot be decided again with policy version {version}: {decision}"
    given = "allow" if decision.allowed else "deny"
    why = f"policies {decision.policies}" + (f": {'; '.join(decision.reasons)}" if decision.reasons else "")
    if given != logged:
        verb = "allows" if decision.allowed else "denies"
        return f"entry {eid}: logged {logged} by policies {policies}, but policy version {version} {verb} it ({why})"
    if decision.policies != policies:
        return (
            f"entry {eid}: logged {logged} by policies {policies}, but policy version {version} "
            f"decides it by {decision.policies}"
        )
    return None


def _by_digest(entries: Sequence[Any]) -> dict[bytes, dict | str]:
    """Earlier entries by digest: the entry, or why it is not one (an entry that cannot be hashed names nothing)."""
    out: dict[bytes, dict | str] = {}
    for entry in entries:
        try:
            digest = entry_digest(entry)
        except DecisionLogError:
            continue
        try:
            out[digest] = check_entry(entry)
        except DecisionLogError as exc:
            out[digest] = str(exc)
    return out


def _check_records(
    records: Sequence[UsageRecord],
    log: Mapping[bytes, dict],
    earlier: Mapping[bytes, dict | str] | None,
    grace: int,
    found: dict[str, list[Finding]],
) -> None:
    named: dict[bytes, str] = {}  # an allow's digest → the first record naming it
    for record in records:
        rid, digest = to_hex(record.record_id), record.decision
        entry = log.get(digest) or (earlier or {}).get(digest)
        if entry is None:
            if earlier is not None:
                found["record"].append(
                    Finding(
                        "record",
                        rid,
                        f"usage record {rid} names decision {to_hex(digest)}, not in this log "
                        "nor in the centre's earlier logs: nothing on record admitted its job",
                    )
                )
            continue
        message = _admits(record, rid, entry, named.get(digest), grace)
        named.setdefault(digest, rid)
        if message:
            found["record"].append(Finding("record", rid, message))


def _admits(record: UsageRecord, rid: str, entry: dict | str, named_by: str | None, grace: int) -> str | None:
    """Why `entry` did not admit the record's job (None: it did), `named_by` the record that named it first."""
    if isinstance(entry, str):
        return f"usage record {rid} names decision {to_hex(record.decision)}, which is no decision log entry: {entry}"
    eid = entry["id"]
    if entry["decision"] != "allow":
        return f"usage record {rid} names entry {eid}, a deny: its job was refused"
    if entry["kind"] != "submit":
        return f"usage record {rid} names entry {eid}, a quote's, not the submission's that admitted it"
    wrong = []
    if named_by is not None:
        wrong.append(f"the allow is already named by usage record {named_by}: one allow admits one job")
    home = entry["principal"]["attrs"].get("home")
    try:
        home_id = centre_id(home)
    except InvalidName:
        home_id = None
    if record.home_centre != home_id:
        wrong.append(f"its job is of a user of home {_centre(record.home_centre)}, the allow of one of {home!r:.40}")
    if record.started_at < entry["time"] - grace:
        wrong.append(
            f"its job started at {record.started_at}, {entry['time'] - record.started_at} s before the allow "
            f"(grace {grace} s)"
        )
    return f"usage record {rid} names allow entry {eid}, but " + "; ".join(wrong) if wrong else None


def _centre(ident: bytes) -> str:
    try:
        return repr(centre_name(ident))
    except InvalidName:
        return to_hex(ident)


def _label(entry: Any, n: int) -> str:
    """An entry's id when it has a readable one, else its position."""
    eid = entry.get("id") if isinstance(entry, dict) else None
    return eid if isinstance(eid, str) and 0 < len(eid) <= 66 else f"#{n}"
