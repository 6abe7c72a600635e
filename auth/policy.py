"""Access decisions with Cedar: may this person submit this job to this queue, and if not, why.

Policies are parsed once. Each request becomes a small entity set:

- principal ``XCentre::User::"<uid@home>"`` with attributes ``principal``, ``home``,
  the subject's attributes (LDAP names as given, plus ``department`` for
  ``departmentNumber``; numeric ones such as ``clearance`` as Longs; multi-valued
  ones as Sets) and its groups as parents ``XCentre::Group::"<cn>"``;
- action ``XCentre::Action::"<action>"`` (e.g. "submit");
- resource ``XCentre::Queue::"<queue>"`` with the other resource keys as attributes
  (``centre``, ``gpu_type``, ``data_class``…; None values are left out, test with ``has``);
- context as given (``walltime`` seconds, ``cores``, ``memory_mib``, ``gpus``, ``hour``…).

Cedar skips a policy whose evaluation errors (a missing attribute, a type
mismatch); a permit skipped that way permits nothing, but a forbid skipped that
way would let a user lift a prohibition by not disclosing an attribute, so an
errored forbid denies (``Decision.errors`` says which and why).

Reasons a person can act on come from annotations: ``@id("…")`` names a policy and
``@reason("…")`` explains it. Cedar reports deciding policies by its own ids
(policy0, policy1… in text order); we map those back through the policy set's
JSON form, which carries the annotations.

A request as Cedar evaluated it (``CedarRequest``: the converted attributes, groups,
queue attributes and context) is what a decision log keeps, so anyone holding the
policy text can decide it again (``decide_request``), and ``reevaluate`` decides a
whole log in few Cedar calls.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from ledger.primitives.canonical import CanonicalError, canonical_json

NAMESPACE = "XCentre"
USER = f"{NAMESPACE}::User"
GROUP = f"{NAMESPACE}::Group"
ACTION = f"{NAMESPACE}::Action"
QUEUE = f"{NAMESPACE}::Queue"
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_ALIASES = {"departmentNumber": "department"}
_CEDAR_ID = re.compile(r"`(policy\d+)`")
_SKIPPED = frozenset({"userpassword", "objectclass", "memberof"})
_CHUNK = 20_000  # requests per Cedar call in a re-evaluation
_OPEN_CHUNKS = 32  # chunks being filled at once; the oldest is closed beyond that
_OUTCOMES = 4096  # Cedar answers remembered per engine (their Decision's parts)
MAX_DEPTH = 32
"""How deep Sets and Records may nest in an attribute or context value. Values are checked with a depth
counter, so a value nested deeper (from a log, a token) is a PolicyError, never deep recursion: py_ecc
raises Python's recursion limit to 100,000, past what the C stack holds."""


class PolicyError(ValueError):
    """The policy text (or schema) is invalid, or a request cannot be expressed in Cedar."""


@dataclass(frozen=True)
class Subject:
    """Who asks: principal "uid@home", attributes (token + live LDAP) and group cns."""

    principal: str
    home: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    groups: Sequence[str] = ()


@dataclass(frozen=True)
class CedarRequest:
    """One request exactly as Cedar evaluates it, in Cedar's JSON values.

    ``attrs`` are the principal entity's attributes (converted: numeric ones as Longs, the
    department alias, ``principal`` and ``home``), ``groups`` its parents (sorted, unique),
    ``resource_attrs`` the queue entity's and ``context`` the request context. What a
    decision log keeps, so re-evaluating it needs nothing else.
    """

    principal: str
    attrs: dict
    groups: tuple[str, ...]
    action: str
    queue: str
    resource_attrs: dict
    context: dict

    def to_dict(self) -> dict:
        """The JSON form logged: principal {id, attrs, groups}, action, resource {queue, attrs}, context."""
        return {
            "principal": {"id": self.principal, "attrs": self.attrs, "groups": list(self.groups)},
            "action": self.action,
            "resource": {"queue": self.queue, "attrs": self.resource_attrs},
            "context": self.context,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CedarRequest:
        """Read the logged form back; PolicyError naming the part that is not Cedar JSON.

        Values must already be Cedar's (bool, Long, String, Set, Record): a float, a null or
        an ``__entity``/``__extn`` escape is refused, so a log cannot smuggle in an entity reference.
        """
        _fields(data, ("principal", "action", "resource", "context"), "a logged Cedar request")
        principal, resource = data["principal"], data["resource"]
        _fields(principal, ("id", "attrs", "groups"), "principal")
        _fields(resource, ("queue", "attrs"), "resource")
        groups = principal["groups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise PolicyError("principal.groups must be a list of non-empty strings")
        return cls(
            principal=_name(principal["id"], "principal.id"),
            attrs=_cedar_record(principal["attrs"], "principal.attrs"),
            groups=tuple(groups),
            action=_name(data["action"], "action"),
            queue=_name(resource["queue"], "resource.queue"),
            resource_attrs=_cedar_record(resource["attrs"], "resource.attrs"),
            context=_cedar_record(data["context"], "context"),
        )


@dataclass(frozen=True)
class Decision:
    """allowed, and why: reasons from the deciding policies' @reason (or why nothing applied).

    policies: @id (or Cedar id) of the deciding policies; errors: policies that could
    not be evaluated for this request (Cedar skips them).
    """

    allowed: bool
    reasons: list[str]
    policies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


_Outcome = tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]


@dataclass(frozen=True)
class _Meta:
    cedar_id: str
    effect: str
    name: str
    reason: str | None


class PolicyEngine:
    """A parsed Cedar policy set (+ optional schema) that answers authorisation requests.

    numeric_attributes: subject attributes whose integer-looking string values (LDAP
    has only strings) become Cedar Longs so policies can compare them.
    """

    def __init__(
        self,
        policies: str,
        entities_schema: str | dict | None = None,
        *,
        numeric_attributes: Iterable[str] = ("clearance",),
    ) -> None:
        if not isinstance(policies, str):
            raise PolicyError("policies must be Cedar policy text")
        self.text = policies
        self.policy_hash = hashlib.sha256(policies.encode("utf-8")).digest()
        self.numeric_attributes = frozenset(numeric_attributes)
        try:
            self._policies = cedarpy.PolicySet.from_str(policies)
            as_json = json.loads(cedarpy.policies_to_json_str(policies))
        except ValueError as exc:
            raise PolicyError(f"invalid Cedar policies: {exc}") from None
        if as_json.get("templates"):
            raise PolicyError("policy templates are not supported; write static policies")
        self._meta: dict[str, _Meta] = {}
        self._outcomes: dict[tuple[bool, tuple[str, ...], tuple[str, ...], bool], _Outcome] = {}
        self._order: dict[str, int] = {}
        names: set[str] = set()
        for cedar_id, body in as_json.get("staticPolicies", {}).items():
            notes = body.get("annotations") or {}
            name = notes.get("id") or cedar_id
            if name in names:
                raise PolicyError(f"two policies are annotated @id({name!r}); ids must be unique")
            names.add(name)
            self._meta[cedar_id] = _Meta(cedar_id, body.get("effect", ""), name, notes.get("reason") or None)
            self._order[cedar_id] = len(self._order)
        # The permits alone: when a forbid denies, they tell whether anything would permit at all.
        permits = dict(
            as_json,
            staticPolicies={k: v for k, v in as_json.get("staticPolicies", {}).items() if v.get("effect") == "permit"},
        )
        self._permits = cedarpy.PolicySet.from_json_str(json.dumps(permits))
        self._schema = None
        self.schema_text: str | None = None
        self.schema_hash = bytes(32)
        if entities_schema is not None:
            schema_text = _schema_text(entities_schema)
            self.schema_text = schema_text
            self.schema_hash = hashlib.sha256(schema_text.encode("utf-8")).digest()
            try:
                if schema_text.lstrip().startswith("{"):  # Cedar's JSON schema format
                    self._schema = cedarpy.Schema.from_json_str(schema_text)
                else:
                    self._schema = cedarpy.Schema.from_str(schema_text)
            except ValueError as exc:
                raise PolicyError(f"invalid Cedar schema: {exc}") from None
            result = cedarpy.validate_policies(policies, self._schema)
            if not result.validation_passed:
                problems = "; ".join(str(e) for e in result.errors)
                raise PolicyError(f"policies do not match the schema: {problems}")

    @property
    def policy_ids(self) -> list[str]:
        """The policies' names (@id, else Cedar's id), in text order."""
        return [m.name for m in self._meta.values()]

    def request(
        self, subject: Subject, action: str, resource: Mapping[str, Any], context: Mapping[str, Any]
    ) -> CedarRequest:
        """The request as Cedar will see it (see the module docstring); PolicyError for what Cedar cannot hold."""
        resource_attrs = _queue_attrs(resource)
        return CedarRequest(
            principal=_name(subject.principal, "subject.principal"),
            attrs=_principal_attrs(subject, self.numeric_attributes),
            groups=tuple(sorted({_name(g, "group") for g in subject.groups})),
            action=_name(action, "action"),
            queue=_name(resource.get("queue"), "resource['queue']"),
            resource_attrs=resource_attrs,
            context=_record(context, "context"),
        )

    def decide(
        self, subject: Subject, action: str, resource: Mapping[str, Any], context: Mapping[str, Any]
    ) -> Decision:
        """Decide one request (see the module docstring for how it maps to Cedar)."""
        return self.decide_request(self.request(subject, action, resource, context))

    def decide_batch(
        self, subject: Subject, action: str, resources: Sequence[Mapping[str, Any]], context: Mapping[str, Any]
    ) -> list[Decision]:
        """Decide the same subject/action/context against several queues in one Cedar call."""
        return self._decide_all([self.request(subject, action, r, context) for r in resources], full=True)

    def decide_request(self, req: CedarRequest) -> Decision:
        """Decide a request in its logged form: what the centre decided, if it applied this policy."""
        return self._decide_all([req], full=True)[0]

    def reevaluate(self, reqs: Sequence[CedarRequest]) -> list[Decision]:
        """Decide many requests (a whole decision log) in few Cedar calls.

        Each decision's `allowed`, `policies` and `errors` are decide_request's; its reasons
        are the deciding policies' only (decide_request asks Cedar a second time, for a
        request a forbid denied, whether anything would have permitted it otherwise).
        """
        return self._decide_all(reqs, full=False)

    def _decide_all(self, reqs: Sequence[CedarRequest], full: bool) -> list[Decision]:
        """Decide requests in as few Cedar calls as their entities allow; identical requests once.

        One Cedar call takes one entity set, where a uid has one set of attributes; a log has
        the same person or queue with different attributes over time. So requests are packed
        greedily into chunks in which no principal or queue appears twice with different
        attributes (or groups), at most _CHUNK requests each (`_pack`).
        """
        chunks, same_as, contexts = _pack(reqs)
        decided: dict[int, Decision] = {}
        for chunk in chunks:
            decisions = self._evaluate([reqs[i] for i in chunk], [contexts[i] for i in chunk], full)
            decided.update(zip(chunk, decisions, strict=True))
        out = []
        for i in range(len(reqs)):
            d = decided[same_as[i]]
            out.append(d if same_as[i] == i else Decision(d.allowed, list(d.reasons), list(d.policies), list(d.errors)))
        return out

    def _evaluate(self, reqs: Sequence[CedarRequest], contexts: Sequence[str], full: bool) -> list[Decision]:
        """Decide requests whose entities agree (no uid with two attribute sets) in one Cedar call.

        contexts: each request's context as JSON, which Cedar reads as it is.
        """
        entities: dict[tuple[str, str], dict] = {}
        requests = []
        for r, context in zip(reqs, contexts, strict=True):
            principal = {"type": USER, "id": r.principal}
            if (USER, r.principal) not in entities:
                parents = [{"type": GROUP, "id": g} for g in r.groups]
                entities[USER, r.principal] = {"uid": principal, "attrs": r.attrs, "parents": parents}
                for g in r.groups:
                    entities.setdefault((GROUP, g), {"uid": {"type": GROUP, "id": g}, "attrs": {}, "parents": []})
            queue = {"type": QUEUE, "id": r.queue}
            entities.setdefault((QUEUE, r.queue), {"uid": queue, "attrs": r.resource_attrs, "parents": []})
            requests.append(
                {
                    "principal": principal,
                    "action": {"type": ACTION, "id": r.action},
                    "resource": queue,
                    "context": context,
                }
            )
        listed: list[dict] | cedarpy.Entities = list(entities.values())
        try:
            listed = cedarpy.Entities.from_json_str(json.dumps(listed), self._schema)
        except (ValueError, TypeError):
            # Cedar refuses the whole entity set for one entity the schema does not allow,
            # and decides every request of the call as that error: decide each on its own.
            if len(reqs) > 1:
                return [self._evaluate([r], [c], full)[0] for r, c in zip(reqs, contexts, strict=True)]
        results = self._authorize(requests, self._policies, listed)
        allowed = [r.allowed for r in results]
        permitted: dict[int, bool] = {}
        if full:  # Denied by a forbid: would anything permit it otherwise? If not, say so too.
            forbidden = [i for i, r in enumerate(results) if not allowed[i] and r.diagnostics.reasons]
            if forbidden:
                again = self._authorize([requests[i] for i in forbidden], self._permits, listed)
                permitted = {i: r.allowed for i, r in zip(forbidden, again, strict=True)}
        return [
            self._decision(result, ok, req.principal, req.action, req.queue, permitted.get(i, True))
            for i, (result, ok, req) in enumerate(zip(results, allowed, reqs, strict=True))
        ]

    def _authorize(
        self, requests: list[dict], policies: cedarpy.PolicySet, entities: list[dict] | cedarpy.Entities
    ) -> list:
        try:
            return cedarpy.is_authorized_batch(requests, policies, entities, self._schema)
        except ValueError as exc:
            raise PolicyError(f"request cannot be evaluated: {exc}") from None

    def _decision(
        self, result: cedarpy.AuthzResult, allowed: bool, principal: str, action: str, queue: str, some_permit: bool
    ) -> Decision:
        """The Decision for Cedar's answer; what depends only on the answer is worked out once per engine."""
        diagnostics = result.diagnostics
        key = (allowed, tuple(diagnostics.reasons), tuple(diagnostics.errors), some_permit)
        outcome = self._outcomes.get(key)
        if outcome is None:
            if len(self._outcomes) >= _OUTCOMES:
                self._outcomes.clear()
            outcome = self._outcomes[key] = self._outcome(*key)
        allowed, reasons, policies, errors, nothing_permits = outcome
        extra = [f"no policy permits {principal} to {action} on queue {queue}"] if nothing_permits else []
        return Decision(allowed, [*reasons, *extra], list(policies), list(errors))

    def _outcome(
        self, allowed: bool, cedar_ids: tuple[str, ...], raw_errors: tuple[str, ...], some_permit: bool
    ) -> _Outcome:
        """(allowed, reasons, policies, errors, whether to add that nothing permits) for one answer of Cedar's."""
        ids = sorted(cedar_ids, key=lambda pid: self._order.get(pid, len(self._order)))
        deciding = [self._meta.get(pid) or _Meta(pid, "", pid, None) for pid in ids]
        errors = tuple(self._named(e) for e in raw_errors)
        if allowed:
            unchecked = self._unchecked_forbids(list(raw_errors))
            if unchecked:
                reasons = tuple(
                    f"policy {name} could not be checked for this request, so it is refused: {error}"
                    for name, error in unchecked
                )
                return False, reasons, tuple(dict.fromkeys(name for name, _ in unchecked)), errors, False
            reasons = tuple(m.reason or f"permitted by policy {m.name}" for m in deciding)
            return True, reasons, tuple(m.name for m in deciding), errors, False
        reasons = tuple(m.reason or f"forbidden by policy {m.name}" for m in deciding)
        return False, reasons, tuple(m.name for m in deciding), errors, not deciding or not some_permit

    def _unchecked_forbids(self, raw_errors: list[str]) -> list[tuple[str, str]]:
        """(name, message) of each forbid Cedar could not evaluate (and so skipped).

        Skipping a forbid would let a missing or mistyped attribute — one the user
        chose not to disclose — lift a prohibition, so these deny. An error that names
        no policy we know counts too: fail closed. A permit that errors stays skipped.
        """
        out = []
        for raw in raw_errors:
            ids = _CEDAR_ID.findall(raw) or [None]
            for pid in ids:
                meta = self._meta.get(pid) if pid else None
                if meta is None or meta.effect != "permit":
                    out.append((meta.name if meta else "(unknown)", self._named(raw)))
        return out

    def _named(self, message: str) -> str:
        """Cedar's messages name policies policy0, policy1…; show their @id instead."""
        return _CEDAR_ID.sub(
            lambda m: f"`{self._meta[m.group(1)].name}`" if m.group(1) in self._meta else m.group(0), message
        )


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{what} must be a non-empty string, got {value!r:.80}")
    return value


def _principal_attrs(subject: Subject, numeric: frozenset[str]) -> dict:
    principal = _name(subject.principal, "subject.principal")
    attrs: dict[str, Any] = {}
    for key, value in (subject.attributes or {}).items():
        if not isinstance(key, str) or key.lower() in _SKIPPED or key.startswith("__") or key == "groups":
            continue
        converted = _value(value, f"subject attribute {key!r}", numeric_key=key in numeric)
        if converted is not None:
            attrs[key] = converted
            if key in _ALIASES and _ALIASES[key] not in subject.attributes:
                attrs[_ALIASES[key]] = converted
    attrs["principal"] = principal
    attrs["home"] = _name(subject.home, "subject.home")
    return attrs


def _queue_attrs(resource: Mapping[str, Any]) -> dict:
    if not isinstance(resource, Mapping):
        raise PolicyError("resource must be a mapping with a 'queue' key")
    _name(resource.get("queue"), "resource['queue']")
    return _record({k: v for k, v in resource.items() if k != "queue"}, "resource")


def _schema_text(schema: str | dict) -> str:
    """The schema's text as hashed and published: as given, or a dict's canonical JSON."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        try:
            return canonical_json(schema)
        except CanonicalError as exc:
            raise PolicyError(f"invalid Cedar schema: {exc}") from None
    raise PolicyError("a Cedar schema must be text or a JSON object")


@dataclass
class _Chunk:
    """One planned Cedar call: the attributes key of each uid in it, its requests, whether it takes more."""

    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    indices: list[int] = field(default_factory=list)
    open: bool = True

    def fits(self, p_uid: tuple[str, str], p_key: str, q_uid: tuple[str, str], q_key: str) -> bool:
        return self.keys.get(p_uid, p_key) == p_key and self.keys.get(q_uid, q_key) == q_key


def _pack(reqs: Sequence[CedarRequest]) -> tuple[list[list[int]], list[int], list[str]]:
    """Plan the Cedar calls for `reqs`: (chunks of indices, the index decided for each, contexts as JSON).

    A request identical to an earlier one is decided once. The others go, first fit, into
    an open chunk where neither their principal nor their queue uid has other attributes;
    a (principal, queue) pair seen before goes straight to the chunk that took it, while
    that one is open. A chunk closes when full, or when more than _OPEN_CHUNKS are open
    (the oldest), which bounds the search whatever the log. The keys are reprs: two
    spellings of one value (keys in another order) only cost a chunk, while `1` and `true`
    stay apart.
    """
    chunks: list[_Chunk] = []
    open_: list[_Chunk] = []
    placed: dict[tuple[str, str, str, str], _Chunk] = {}
    seen: dict[tuple[str, str, str, str, str, str], int] = {}
    same_as: list[int] = []
    contexts: list[str] = []
    for i, r in enumerate(reqs):
        context = json.dumps(r.context)
        contexts.append(context)
        p_key, q_key = repr((r.attrs, r.groups)), repr(r.resource_attrs)
        key = (r.principal, p_key, r.queue, q_key, r.action, context)
        first = seen.setdefault(key, i)
        same_as.append(first)
        if first != i:
            continue
        pair = key[:4]
        chunk = placed.get(pair)
        if chunk is None or not chunk.open:
            p_uid, q_uid = (USER, r.principal), (QUEUE, r.queue)
            chunk = next((c for c in open_ if c.fits(p_uid, p_key, q_uid, q_key)), None)
            if chunk is None:
                chunk = _Chunk()
                chunks.append(chunk)
                open_.append(chunk)
                if len(open_) > _OPEN_CHUNKS:
                    open_.pop(0).open = False
            chunk.keys[p_uid], chunk.keys[q_uid] = p_key, q_key
            placed[pair] = chunk
        chunk.indices.append(i)
        if len(chunk.indices) >= _CHUNK:
            chunk.open = False
            open_.remove(chunk)
    return [c.indices for c in chunks], same_as, contexts


def _record(values: Mapping[str, Any], what: str, depth: int = 0, top: str | None = None) -> dict:
    """A mapping as a Cedar Record; `depth`: how deep it is nested in the value named `top` (MAX_DEPTH)."""
    if not isinstance(values, Mapping):
        raise PolicyError(f"{what} must be a mapping")
    out = {}
    for key, value in values.items():
        if not isinstance(key, str) or key.startswith("__"):
            raise PolicyError(f"{what} key {key!r} is not allowed")
        path = f"{what}[{key!r}]"
        converted = _value(value, path, depth=depth + 1, top=top or path)
        if converted is not None:
            out[key] = converted
    return out


def _value(value: Any, what: str, numeric_key: bool = False, depth: int = 1, top: str | None = None) -> Any:
    """A Python value as a Cedar JSON value: bool, Long, String, Set or Record (None: leave out)."""
    if isinstance(value, (list, tuple, set, frozenset, Mapping)) and depth > MAX_DEPTH:
        raise PolicyError(f"{top or what} nests deeper than {MAX_DEPTH} levels of sets and records")
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise PolicyError(f"{what} is out of Cedar's integer range")
        return value
    if isinstance(value, float):
        return _value(int(value), what) if value.is_integer() else str(value)
    if isinstance(value, str):
        if numeric_key:
            try:
                return _value(int(value.strip()), what)
            except ValueError:
                raise PolicyError(f"{what} must be an integer, got {value!r:.40}") from None
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_value(v, what, numeric_key, depth + 1, top or what) for v in value]
        return [v for v in items if v is not None]
    if isinstance(value, Mapping):
        return _record(value, what, depth, top or what)
    raise PolicyError(f"{what} has a type Cedar cannot hold: {type(value).__name__}")


def _fields(data: Any, names: tuple[str, ...], what: str) -> None:
    if not isinstance(data, dict):
        raise PolicyError(f"{what} must be a JSON object, got {type(data).__name__}")
    missing = [n for n in names if n not in data]
    extra = [k for k in data if k not in names]
    if missing or extra:
        raise PolicyError(f"{what}: missing {missing}, unexpected {extra}")


def _cedar_record(values: Any, what: str, depth: int = 0, top: str | None = None) -> dict:
    """`values` when it is a Record of Cedar values nested at most MAX_DEPTH deep (`depth`: its own, in `top`)."""
    if not isinstance(values, dict):
        raise PolicyError(f"{what} must be a JSON object, got {type(values).__name__}")
    for key, value in values.items():
        if not isinstance(key, str) or key.startswith("__"):
            raise PolicyError(f"{what} key {key!r} is not allowed")
        path = f"{what}.{key}"
        _cedar_value(value, path, depth + 1, top or path)
    return values


def _cedar_value(value: Any, what: str, depth: int, top: str) -> None:
    """Refuse anything but Cedar's JSON values: bool, Long, String, Set (list), Record (object)."""
    if isinstance(value, (list, dict)) and depth > MAX_DEPTH:
        raise PolicyError(f"{top} nests deeper than {MAX_DEPTH} levels of sets and records")
    if isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise PolicyError(f"{what} is out of Cedar's integer range")
        return
    if isinstance(value, list):
        for item in value:
            _cedar_value(item, what, depth + 1, top)
        return
    if isinstance(value, dict):
        _cedar_record(value, what, depth, top)
        return
    raise PolicyError(f"{what} is not a Cedar value (bool, integer, string, list or object): {value!r:.40}")
