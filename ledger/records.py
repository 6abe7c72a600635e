"""Usage records as EIP-712 typed data, signed by the serving centre's chain key.

EIP-712 makes a record verifiable by anyone holding the centre's on-chain account
(and by a contract, should a dispute need it); the domain binds it to one consortium
deployment: chain id and the UsageLedger address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address

from ledger.primitives.canonical import canonical_json
from ledger.primitives.hex import HexError, from_hex, to_hex

DOMAIN_NAME = "xcentre"
DOMAIN_VERSION = "1"

_BYTES32 = ("record_id", "job_id", "serving_centre", "home_centre", "user")
_UINT64 = ("epoch", "started_at", "ended_at", "cpu_millis", "wall_millis", "max_rss_kib", "gpu_millis", "rates_version")
_UINT256 = ("price",)

USAGE_RECORD_TYPE = [
    {"name": "recordId", "type": "bytes32"},
    {"name": "jobId", "type": "bytes32"},
    {"name": "servingCentre", "type": "bytes32"},
    {"name": "homeCentre", "type": "bytes32"},
    {"name": "user", "type": "bytes32"},
    {"name": "epoch", "type": "uint64"},
    {"name": "startedAt", "type": "uint64"},
    {"name": "endedAt", "type": "uint64"},
    {"name": "cpuMillis", "type": "uint64"},
    {"name": "wallMillis", "type": "uint64"},
    {"name": "maxRssKib", "type": "uint64"},
    {"name": "gpuMillis", "type": "uint64"},
    {"name": "ratesVersion", "type": "uint64"},
    {"name": "price", "type": "uint256"},
]
EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


class InvalidRecord(ValueError):
    """A usage record with a field out of its type's range, or malformed JSON."""


class InvalidSignature(ValueError):
    """A signature that is not 65 bytes or does not recover."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


@dataclass(frozen=True)
class Domain:
    """EIP-712 domain of a deployment's usage records."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, int) or self.chain_id <= 0:
            raise ValueError(f"chain_id must be a positive int, got {self.chain_id!r}")
        if not is_address(self.verifying_contract):
            raise ValueError(f"verifying_contract is not an address: {self.verifying_contract!r}")
        object.__setattr__(self, "verifying_contract", to_checksum_address(self.verifying_contract))

    @classmethod
    def for_deployment(cls, deployment: Any) -> Domain:
        """The domain of a ledger.deploy.Deployment (its chain id and UsageLedger)."""
        return cls(chain_id=deployment.chain_id, verifying_contract=deployment.usage_ledger)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def domain_for(deployment: Any) -> Domain:
    """Domain.for_deployment, as a function."""
    return Domain.for_deployment(deployment)


@dataclass(frozen=True)
class UsageRecord:
    """What a serving centre metered for one job, in integers.

    `rates_version` names the serving centre's published rates (Consortium.rates) in
    force when the job was accepted; `price` is the meters x those rates, so anyone
    can recompute it from the chain.
    """

    record_id: bytes
    job_id: bytes
    serving_centre: bytes
    home_centre: bytes
    user: bytes
    epoch: int
    started_at: int
    ended_at: int
    cpu_millis: int
    wall_millis: int
    max_rss_kib: int
    gpu_millis: int
    rates_version: int
    price: int

    def __post_init__(self) -> None:
        for name in _BYTES32:
            value = getattr(self, name)
            if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
                raise InvalidRecord(f"{name} must be 32 bytes, got {value!r}")
            object.__setattr__(self, name, bytes(value))
        for name, bits in [(n, 64) for n in _UINT64] + [(n, 256) for n in _UINT256]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
                raise InvalidRecord(f"{name} must be an int in [0, 2**{bits}), got {value!r}")
        if self.ended_at < self.started_at:
            raise InvalidRecord("ended_at is before started_at")
        if self.rates_version == 0:
            raise InvalidRecord("rates_version must name a published version (they count from 1)")

    def to_dict(self) -> dict[str, Any]:
        """snake_case fields; bytes32 as 0x-hex strings, numbers as ints."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = to_hex(value) if isinstance(value, bytes) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict):
            raise InvalidRecord("a usage record must be a JSON object")
        missing = [n for n in names if n not in data]
        extra = [k for k in data if k not in names]
        if missing or extra:
            raise InvalidRecord(f"usage record fields: missing {missing}, unexpected {extra}")
        values: dict[str, Any] = {}
        for name in names:
            value = data[name]
            if name in _BYTES32:
                if not isinstance(value, str) or not value.startswith("0x"):
                    raise InvalidRecord(f"{name} must be a 0x-hex string")
                try:
                    value = from_hex(value, what=name)
                except HexError as exc:
                    raise InvalidRecord(str(exc)) from None
            values[name] = value
        return cls(**values)

    def to_json(self) -> str:
        """Canonical JSON (primitives.canonical): the spelling stored and served."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> UsageRecord:
        if isinstance(text, dict):
            return cls.from_dict(text)
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InvalidRecord(f"usage record is not JSON: {exc}") from None
        return cls.from_dict(data)

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (camelCase field names)."""
        return {_camel(f.name): getattr(self, f.name) for f in fields(self)}


def _domain(domain: Domain | dict[str, Any] | Any) -> Domain:
    if isinstance(domain, Domain):
        return domain
    if isinstance(domain, dict):
        return Domain(
            chain_id=int(domain["chainId"]),
            verifying_contract=domain["verifyingContract"],
            name=domain.get("name", DOMAIN_NAME),
            version=domain.get("version", DOMAIN_VERSION),
        )
    if hasattr(domain, "usage_ledger") and hasattr(domain, "chain_id"):
        return Domain.for_deployment(domain)
    raise TypeError(f"not an EIP-712 domain: {domain!r}")


def typed_data(rec: UsageRecord, domain: Domain | dict[str, Any]) -> dict[str, Any]:
    """The full EIP-712 typed-data document (as wallets' signTypedData_v4 take it)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "UsageRecord": USAGE_RECORD_TYPE},
        "primaryType": "UsageRecord",
        "domain": _domain(domain).as_dict(),
        "message": rec.message(),
    }


def _signable(rec: UsageRecord, domain: Domain | dict[str, Any]) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(rec, domain))


def record_digest(rec: UsageRecord, domain: Domain | dict[str, Any]) -> bytes:
    """keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(record)): what is signed."""
    s = _signable(rec, domain)
    return keccak(b"\x19" + s.version + s.header + s.body)


def record_leaf(rec: UsageRecord, domain: Domain | dict[str, Any]) -> bytes:
    """Merkle leaf of a record: keccak256(keccak256(digest)), never equal to an inner node."""
    return keccak(keccak(record_digest(rec, domain)))


def sign_record(rec: UsageRecord, domain: Domain | dict[str, Any], private_key: Any) -> bytes:
    """65-byte (r ‖ s ‖ v) signature of the record by `private_key` (hex, bytes or LocalAccount)."""
    key = private_key.key if hasattr(private_key, "key") else private_key
    return bytes(Account.sign_message(_signable(rec, domain), private_key=key).signature)


def recover_signer(rec: UsageRecord, domain: Domain | dict[str, Any], sig: bytes) -> str:
    """The checksummed address that signed the record (InvalidSignature if malformed)."""
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != 65:
        raise InvalidSignature("a record signature must be 65 bytes")
    try:
        return Account.recover_message(_signable(rec, domain), signature=bytes(sig))
    except Exception as exc:  # eth_keys raises BadSignature / ValidationError variants
        raise InvalidSignature(f"signature does not recover: {exc}") from exc
