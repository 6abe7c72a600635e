"""Usage records as EIP-712 typed data, signed by the serving centre's chain key.

EIP-712 makes a record verifiable by anyone holding the centre's on-chain account
(and by a contract, should a dispute need it); the domain binds it to one consortium
deployment: chain id and the UsageLedger address.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from operator import attrgetter
from typing import Annotated, Any, ClassVar, get_args, get_origin, get_type_hints

from coincurve import PublicKey
from eth_abi import encode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address

from ledger.primitives.canonical import canonical_json
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.primitives.keccak import keccak256

DOMAIN_NAME = "xcentre"
DOMAIN_VERSION = "1"

# Field annotations of typed data: the Python type, then the Solidity type it is signed as.
Bytes32 = Annotated[bytes, "bytes32"]
Uint64 = Annotated[int, "uint64"]
Uint256 = Annotated[int, "uint256"]
Address = Annotated[str, "address"]

EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_SECP256K1_HALF_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2


class InvalidTypedData(ValueError):
    """Typed data (a record, order, grant or receipt) with a field out of its type's range, or malformed JSON."""


class InvalidRecord(InvalidTypedData):
    """A usage record with a field out of its type's range, or malformed JSON."""


class InvalidSignature(ValueError):
    """A signature that is not 65 bytes r ‖ s ‖ v, is malleable (high s), or does not recover."""


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

    def separator(self) -> bytes:
        """The EIP-712 domain separator."""
        return _separator(self.name, self.version, self.chain_id, self.verifying_contract)

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


@cache
def _separator(name: str, version: str, chain_id: int, contract: str) -> bytes:
    domain_type = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [keccak(text=domain_type), keccak(text=name), keccak(text=version), chain_id, contract],
        )
    )


@dataclass(frozen=True)
class TypedData:
    """Base of the frozen dataclasses signed as EIP-712 structs (records, orders, grants, receipts).

    Each field is annotated Bytes32, Uint64, Uint256 or Address; the dataclass field order is the
    struct's; a subclass names its struct, itself in messages and its error class. The base
    validates every field, spells the JSON (snake_case, bytes32 and addresses as 0x-hex,
    numbers as ints) and the EIP-712 message.
    """

    TYPE_NAME: ClassVar[str]
    ERROR: ClassVar[type[InvalidTypedData]] = InvalidTypedData
    WHAT: ClassVar[str] = "typed data"

    def __init_subclass__(cls, *, name: str, what: str, error: type[InvalidTypedData], **kw: Any) -> None:
        """`class Order(TypedData, name="Order", what="order", error=InvalidPayment)`."""
        super().__init_subclass__(**kw)
        cls.TYPE_NAME, cls.WHAT, cls.ERROR = name, what, error

    def __post_init__(self) -> None:
        for name, sol in self.solidity_fields():
            object.__setattr__(self, name, _checked(self.ERROR, name, sol, getattr(self, name)))
        self.check()

    def check(self) -> None:
        """Rules across fields, beyond each field's type (a subclass's hook)."""

    @classmethod
    def solidity_fields(cls) -> tuple[tuple[str, str], ...]:
        """(snake_case name, Solidity type) of each field, in struct order."""
        return _solidity_fields(cls)

    @classmethod
    def eip712_type(cls) -> list[dict[str, str]]:
        return [{"name": _camel(n), "type": t} for n, t in cls.solidity_fields()]

    @classmethod
    def type_string(cls) -> str:
        """`Name(type field,...)`, whose keccak is the struct's type hash."""
        return f"{cls.TYPE_NAME}(" + ",".join(f"{t} {_camel(n)}" for n, t in cls.solidity_fields()) + ")"

    def to_dict(self) -> dict[str, Any]:
        """snake_case fields; bytes32 as 0x-hex strings, addresses checksummed, numbers as ints."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = to_hex(value) if isinstance(value, bytes) else value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        expect_fields(data, [n for n, _ in cls.solidity_fields()], cls.WHAT, cls.ERROR)
        values: dict[str, Any] = {}
        for name, sol in cls.solidity_fields():
            value = data[name]
            if sol == "bytes32":
                if not isinstance(value, str) or not value.startswith("0x"):
                    raise cls.ERROR(f"{name} must be a 0x-hex string")
                try:
                    value = from_hex(value, what=name)
                except HexError as exc:
                    raise cls.ERROR(str(exc)) from None
            values[name] = value
        return cls(**values)

    def to_json(self) -> str:
        """Canonical JSON (primitives.canonical): the spelling stored and served."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> Any:
        if isinstance(text, dict):
            return cls.from_dict(text)
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise cls.ERROR(f"{cls.WHAT} is not JSON: {exc}") from None
        return cls.from_dict(data)

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (camelCase field names)."""
        return {_camel(n): getattr(self, n) for n, _ in self.solidity_fields()}

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct as a contract call takes it (fields in struct order)."""
        return tuple(getattr(self, n) for n, _ in self.solidity_fields())

    def struct_hash(self) -> bytes:
        """hashStruct: keccak256(typeHash ‖ abi.encode(fields)); every field is atomic.

        Encoded by hand (a bytes32 is itself, a uint its 32-byte big-endian word, an address
        left-padded to 32 bytes): the fields are checked at construction, so this is
        abi.encode's output byte for byte, at a tenth of eth_abi's cost (tests compare both
        with eth-account's EIP-712 encoder).
        """
        return keccak256(_type_hash(type(self)) + _encoding(type(self)).encode(self))


def expect_fields(data: Any, names: list[str], what: str, error: type[ValueError]) -> None:
    """`error` unless `data` is a JSON object with exactly the fields `names` (naming the missing and unexpected)."""
    if not isinstance(data, dict):
        raise error(f"a {what} must be a JSON object")
    missing = [n for n in names if n not in data]
    extra = [k for k in data if k not in names]
    if missing or extra:
        raise error(f"{what} fields: missing {missing}, unexpected {extra}")


_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {}
_TYPE_HASHES: dict[str, bytes] = {}


def _solidity_fields(cls: type[TypedData]) -> tuple[tuple[str, str], ...]:
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _FIELDS:
        hints = get_type_hints(cls, include_extras=True)
        out = []
        for f in fields(cls):
            hint = hints[f.name]
            if get_origin(hint) is not Annotated:
                raise TypeError(f"{cls.__name__}.{f.name} is not annotated with a Solidity type")
            out.append((f.name, get_args(hint)[1]))
        _FIELDS[key] = tuple(out)
    return _FIELDS[key]


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:])


@dataclass(frozen=True)
class _Encoding:
    """abi.encode of a struct's fields, every one a 32-byte word: read at once, converted where struct cannot."""

    read: Callable[[Any], tuple[Any, ...]]
    pack: Callable[..., bytes]
    convert: tuple[tuple[int, Callable[[Any], bytes]], ...]

    def encode(self, obj: Any) -> bytes:
        values = self.read(obj)
        if self.convert:
            values = list(values)  # type: ignore[assignment]
            for i, fn in self.convert:
                values[i] = fn(values[i])  # type: ignore[index]
        return self.pack(*values)


_ENCODINGS: dict[type, _Encoding] = {}


def struct_encoder(cls: type[TypedData]) -> tuple[bytes, Callable[[Any], bytes]]:
    """(type hash, abi.encode of an instance's fields): hashStruct(x) is keccak256(type hash ‖ encode(x)), for
    callers that hash many of one type (an audit's records)."""
    return _type_hash(cls), _encoding(cls).encode


def _encoding(cls: type[TypedData]) -> _Encoding:
    """bytes32 as itself ("32s"), a uint of up to 64 bits as a big-endian word ("24xQ"), a wider one converted to
    its word, an address as its 20 bytes after 12 zero bytes ("12x20s")."""
    if cls not in _ENCODINGS:
        layout, convert = ">", list[tuple[int, Callable[[Any], bytes]]]()
        names = [n for n, _ in _solidity_fields(cls)]
        for i, (_, sol) in enumerate(_solidity_fields(cls)):
            if sol == "bytes32":
                layout += "32s"
            elif sol == "address":
                layout += "12x20s"
                convert.append((i, _address_bytes))
            elif int(sol.removeprefix("uint")) <= 64:
                layout += "24xQ"
            else:
                layout += "32s"
                convert.append((i, _word))
        getter = attrgetter(*names)
        read = getter if len(names) > 1 else (lambda obj: (getter(obj),))
        _ENCODINGS[cls] = _Encoding(read, struct.Struct(layout).pack, tuple(convert))
    return _ENCODINGS[cls]


def _type_hash(cls: type[TypedData]) -> bytes:
    if cls.TYPE_NAME not in _TYPE_HASHES:
        _TYPE_HASHES[cls.TYPE_NAME] = keccak(text=cls.type_string())
    return _TYPE_HASHES[cls.TYPE_NAME]


def _checked(error: type[InvalidTypedData], name: str, sol: str, value: Any) -> Any:
    """`value` normalised for Solidity type `sol`, or `error` naming the field."""
    if sol == "bytes32":
        if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
            raise error(f"{name} must be 32 bytes, got {value!r}")
        return bytes(value)
    if sol == "address":
        if not isinstance(value, str) or not is_address(value):
            raise error(f"{name} must be a 0x-hex address of 20 bytes, got {value!r}")
        return checksum_address(bytes.fromhex(value[-40:]))  # is_address took 40 hex digits, 0x or not
    bits = int(sol.removeprefix("uint"))
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise error(f"{name} must be an int in [0, 2**{bits}), got {value!r}")
    return value


@dataclass(frozen=True)
class UsageRecord(TypedData, name="UsageRecord", what="usage record", error=InvalidRecord):
    """What a serving centre metered for one job, in integers.

    `rates_version` names the serving centre's published rates (Consortium.rates) in
    force when the job was accepted; `price` is the meters x those rates, capped at the
    grant, so anyone can recompute it from the chain. `order` and `grant` are the digests
    of the user's order and its home's grant that authorised the job; `lock_hash` is
    keccak256 of the key the job's outputs are sealed under (ledger.lock); `decision` is
    the digest of the access-decision log entry that admitted the job (ledger.decisions),
    committed by the centre's anchored decision log; `group_signature` is keccak256 of the
    group signature an anonymous job was submitted under (auth.group.signature), what a
    supervisor asks to open, and zero for a job signed on with a session (the default).
    `user` is the order's payment account, fresh per order, left-padded to 32 bytes: records are public,
    and a hash of the principal would name a guessable uid and link all of a user's jobs.
    """

    record_id: Bytes32
    job_id: Bytes32
    serving_centre: Bytes32
    home_centre: Bytes32
    user: Bytes32
    epoch: Uint64
    started_at: Uint64
    ended_at: Uint64
    cpu_millis: Uint64
    wall_millis: Uint64
    max_rss_kib: Uint64
    gpu_millis: Uint64
    rates_version: Uint64
    price: Uint256
    order: Bytes32
    grant: Bytes32
    lock_hash: Bytes32
    decision: Bytes32
    group_signature: Bytes32 = bytes(32)

    def check(self) -> None:
        if self.ended_at < self.started_at:
            raise InvalidRecord("ended_at is before started_at")
        if self.rates_version == 0:
            raise InvalidRecord("rates_version must name a published version (they count from 1)")


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


DomainLike = Domain | dict[str, Any] | Any
"""A Domain, its as_dict() form, or a ledger.deploy.Deployment."""


def typed_data(obj: TypedData, domain: DomainLike) -> dict[str, Any]:
    """The full EIP-712 typed-data document (as wallets' signTypedData_v4 take it)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, obj.TYPE_NAME: obj.eip712_type()},
        "primaryType": obj.TYPE_NAME,
        "domain": _domain(domain).as_dict(),
        "message": obj.message(),
    }


def signable(obj: TypedData, domain: DomainLike) -> SignableMessage:
    """What a wallet signs: the typed-data document, encoded (for hardware and browser wallets)."""
    return encode_typed_data(full_message=typed_data(obj, domain))


def digest(obj: TypedData, domain: DomainLike) -> bytes:
    """keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(obj)): what is signed, what contracts hash."""
    return keccak256(b"\x19\x01" + _domain(domain).separator() + obj.struct_hash())


def sign_typed(obj: TypedData, domain: DomainLike, private_key: Any) -> bytes:
    """65-byte (r ‖ s ‖ v, v 27/28, low s) signature of `obj` by `private_key` (hex, bytes or LocalAccount)."""
    key = private_key.key if hasattr(private_key, "key") else private_key
    return bytes(Account.unsafe_sign_hash(digest(obj, domain), private_key=key).signature)


def recover(obj: TypedData, domain: DomainLike, sig: Any) -> str:
    """The checksummed address that signed `obj`, by the rules of OpenZeppelin's ECDSA.recover.

    InvalidSignature for anything it would refuse: not 65 bytes, v not 27/28, a high s
    (the malleable twin of a valid signature), or no recoverable key.
    """
    return to_checksum_address(recover_digest(digest(obj, domain), sig, obj.WHAT))


def recover_digest(signed: bytes, sig: Any, what: str = "typed data") -> bytes:
    """The 20-byte address whose key signed the 32-byte digest `signed`: recover's rules, without the typed data.

    libsecp256k1 (coincurve) recovers directly; only when it refuses is the signature handed to
    eth-account, whose message is the one reported, so a refusal reads as it always did.
    """
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != 65:
        raise InvalidSignature(f"a {what} signature must be 65 bytes")
    if sig[64] not in (27, 28):
        raise InvalidSignature(f"v must be 27 or 28, got {sig[64]}")
    if int.from_bytes(sig[32:64], "big") > _SECP256K1_HALF_N:
        raise InvalidSignature("high s: a malleable signature, refused as OpenZeppelin's ECDSA does")
    try:
        point = PublicKey.from_signature_and_message(bytes(sig[:64]) + bytes((sig[64] - 27,)), signed, hasher=None)
        return keccak256(point.format(compressed=False)[1:])[12:]
    except Exception:  # noqa: BLE001 - refused: eth-account says why, in the words reported so far
        pass
    try:
        return bytes.fromhex(Account._recover_hash(signed, signature=bytes(sig))[2:])
    except Exception as exc:  # eth_keys raises BadSignature / ValidationError variants
        raise InvalidSignature(f"signature does not recover: {exc}") from exc


_EIP55 = {(c, h): c.upper() if h in "89abcdef" else c for c in "0123456789abcdef" for h in "0123456789abcdef"}


def checksum_address(raw: bytes) -> str:
    """The EIP-55 (checksummed) spelling of a 20-byte address, as eth_utils.to_checksum_address spells it.

    A fifth of its cost: it hashes through eth_hash's dispatch and checks its input again, and
    a submission spells both of its signers (tests compare the two on random addresses).
    """
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != 20:
        raise ValueError(f"an address is 20 bytes, got {raw!r:.80}")
    lower = bytes(raw).hex()
    mask = keccak256(lower.encode("ascii")).hex()  # 64 digits, of which the first 40 count
    return "0x" + "".join(map(_EIP55.__getitem__, zip(lower, mask, strict=False)))


def record_digest(rec: UsageRecord, domain: DomainLike) -> bytes:
    """The record's EIP-712 digest (digest, named for records)."""
    return digest(rec, domain)


def record_leaf(rec: UsageRecord, domain: DomainLike) -> bytes:
    """Merkle leaf of a record: keccak256(keccak256(digest)), never equal to an inner node."""
    return keccak(keccak(record_digest(rec, domain)))


def sign_record(rec: UsageRecord, domain: DomainLike, private_key: Any) -> bytes:
    """The serving centre's signature of a record (sign_typed)."""
    return sign_typed(rec, domain, private_key)


def recover_signer(rec: UsageRecord, domain: DomainLike, sig: Any) -> str:
    """The checksummed address that signed the record (recover)."""
    return recover(rec, domain, sig)
