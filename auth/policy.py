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
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

NAMESPACE = "XCentre"
USER = f"{NAMESPACE}::User"
GROUP = f"{NAMESPACE}::Group"
ACTION = f"{NAMESPACE}::Action"
QUEUE = f"{NAMESPACE}::Queue"
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_ALIASES = {"departmentNumber": "department"}
_CEDAR_ID = re.compile(r"`(policy\d+)`")
_SKIPPED = frozenset({"userpassword", "objectclass", "memberof"})


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
class Decision:
    """allowed, and why: reasons from the deciding policies' @reason (or why nothing applied).

    policies: @id (or Cedar id) of the deciding policies; errors: policies that could
    not be evaluated for this request (Cedar skips them).
    """

    allowed: bool
    reasons: list[str]
    policies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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
        self.version = hashlib.sha256(policies.encode("utf-8")).hexdigest()
        self.numeric_attributes = frozenset(numeric_attributes)
        try:
            self._policies = cedarpy.PolicySet.from_str(policies)
            as_json = json.loads(cedarpy.policies_to_json_str(policies))
        except ValueError as exc:
            raise PolicyError(f"invalid Cedar policies: {exc}") from None
        if as_json.get("templates"):
            raise PolicyError("policy templates are not supported; write static policies")
        self._meta: dict[str, _Meta] = {}
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
        if entities_schema is not None:
            schema_text = json.dumps(entities_schema) if isinstance(entities_schema, dict) else entities_schema
            try:
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

    def decide(
        self, subject: Subject, action: str, resource: Mapping[str, Any], context: Mapping[str, Any]
    ) -> Decision:
        """Decide one request (see the module docstring for how it maps to Cedar)."""
        return self.decide_batch(subject, action, [resource], context)[0]

    def decide_batch(
        self, subject: Subject, action: str, resources: Sequence[Mapping[str, Any]], context: Mapping[str, Any]
    ) -> list[Decision]:
        """Decide the same subject/action/context against several queues in one Cedar call."""
        if not resources:
            return []
        principal = _principal_entity(subject, self.numeric_attributes)
        entities = [principal] + [
            {"uid": {"type": GROUP, "id": g}, "attrs": {}, "parents": []} for g in sorted(set(subject.groups))
        ]
        action_uid = {"type": ACTION, "id": _name(action, "action")}
        cedar_context = _record(context, "context")
        requests, queues, seen = [], [], set()
        for resource in resources:
            queue_entity = _queue_entity(resource)
            queue = queue_entity["uid"]["id"]
            if queue not in seen:
                seen.add(queue)
                entities.append(queue_entity)
            queues.append(queue)
            requests.append(
                {
                    "principal": principal["uid"],
                    "action": action_uid,
                    "resource": queue_entity["uid"],
                    "context": cedar_context,
                }
            )
        results = self._authorize(requests, self._policies, entities)
        # Denied by a forbid: would anything permit it otherwise? If not, say so too.
        forbidden = [i for i, r in enumerate(results) if not r.allowed and r.diagnostics.reasons]
        permitted: dict[int, bool] = {}
        if forbidden:
            again = self._authorize([requests[i] for i in forbidden], self._permits, entities)
            permitted = {i: r.allowed for i, r in zip(forbidden, again, strict=True)}
        return [
            self._decision(r, subject.principal, action, q, permitted.get(i, True))
            for i, (r, q) in enumerate(zip(results, queues, strict=True))
        ]

    def _authorize(self, requests: list[dict], policies: cedarpy.PolicySet, entities: list[dict]) -> list:
        try:
            return cedarpy.is_authorized_batch(requests, policies, entities, self._schema)
        except ValueError as exc:
            raise PolicyError(f"request cannot be evaluated: {exc}") from None

    def _decision(
        self, result: cedarpy.AuthzResult, principal: str, action: str, queue: str, some_permit: bool
    ) -> Decision:
        ids = sorted(result.diagnostics.reasons, key=lambda pid: self._order.get(pid, len(self._order)))
        deciding = [self._meta.get(pid) or _Meta(pid, "", pid, None) for pid in ids]
        raw_errors = list(result.diagnostics.errors)
        errors = [self._named(e) for e in raw_errors]
        if result.allowed:
            unchecked = self._unchecked_forbids(raw_errors)
            if unchecked:
                reasons = [
                    f"policy {name} could not be checked for this request, so it is refused: {error}"
                    for name, error in unchecked
                ]
                return Decision(False, reasons, list(dict.fromkeys(name for name, _ in unchecked)), errors)
            reasons = [m.reason or f"permitted by policy {m.name}" for m in deciding]
            return Decision(True, reasons, [m.name for m in deciding], errors)
        reasons = [m.reason or f"forbidden by policy {m.name}" for m in deciding]
        if not deciding or not some_permit:
            reasons.append(f"no policy permits {principal} to {action} on queue {queue}")
        return Decision(False, reasons, [m.name for m in deciding], errors)

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


def _principal_entity(subject: Subject, numeric: frozenset[str]) -> dict:
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
    parents = [{"type": GROUP, "id": _name(g, "group")} for g in sorted(set(subject.groups))]
    return {"uid": {"type": USER, "id": principal}, "attrs": attrs, "parents": parents}


def _queue_entity(resource: Mapping[str, Any]) -> dict:
    if not isinstance(resource, Mapping):
        raise PolicyError("resource must be a mapping with a 'queue' key")
    queue = _name(resource.get("queue"), "resource['queue']")
    attrs = _record({k: v for k, v in resource.items() if k != "queue"}, "resource")
    return {"uid": {"type": QUEUE, "id": queue}, "attrs": attrs, "parents": []}


def _record(values: Mapping[str, Any], what: str) -> dict:
    if not isinstance(values, Mapping):
        raise PolicyError(f"{what} must be a mapping")
    out = {}
    for key, value in values.items():
        if not isinstance(key, str) or key.startswith("__"):
            raise PolicyError(f"{what} key {key!r} is not allowed")
        converted = _value(value, f"{what}[{key!r}]")
        if converted is not None:
            out[key] = converted
    return out


def _value(value: Any, what: str, numeric_key: bool = False) -> Any:
    """A Python value as a Cedar JSON value: bool, Long, String, Set or Record (None: leave out)."""
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
        items = [_value(v, what, numeric_key) for v in value]
        return [v for v in items if v is not None]
    if isinstance(value, Mapping):
        return _record(value, what)
    raise PolicyError(f"{what} has a type Cedar cannot hold: {type(value).__name__}")
