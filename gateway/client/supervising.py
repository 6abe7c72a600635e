"""The supervisor's side: the joint key's generation, openings asked for and shared, the record read back.

A supervisor is a member centre of the `Supervision` contract's committee. Its
secrets live in one state file (0600, `write_private`): the encryption key e_i
its DKG shares come under, its polynomial while the key is being made (kept to
answer complaints, dropped once the key is made), then its share x_i of the
joint secret, checked against the chain (x_i·G == Y_i) before it is kept. No
party ever holds the joint secret.

The DKG (Pedersen's joint-Feldman with complaints, `auth.group.dkg`) is driven
one `dkg_step` at a time; each step reads the chain first and does only what is
still to do (register, deal, complain of a bad share, answer a complaint,
acknowledge, finalize), so it can be run again after a crash, by each
supervisor on its own, or for all local supervisors in turn (`run_local_dkg`).
A secret is written before the transaction that depends on it is sent.
Registration closes `dkg_window` seconds after the contract's deployment; the
key is then made among those who registered (at least t), a seat left empty
gets 128 zero bytes in each deal (the contract reads no slot of an empty seat).

An opening's transaction is the digest of the order its group signature signs
(a job's usage record names both, `order` and `groupSignature`; a home's hold of
an anonymous grant is one too). A supervisor shares for an opening only once it
has checked what it opens with nothing but the chain: the signature, fetched
from any centre that keeps it, hashes to the one on record and is a valid group
signature over exactly the opening's transaction, by an issuer key its home
registered on chain, by a member of the opening's home (`share`). So it does
not matter who serves it: a blob with a ciphertext of someone's choosing, or
another transaction's signature, is never opened.

Every request is an opening of its own; the openings of one ciphertext C1 share
one pool of decryption shares (D_i = x_i·C1 is the same whichever opening it is
given for), so a supervisor shares once per ciphertext, for the opening whose
claim it checked, with a proof bound to the pool's id. When the pool has t
shares, each opening a share was given for is opened, to T = C2 − x·C1 with its
own C2. A bogus request (a wrong transaction, a C2 of its asker's own) blocks
nothing: nobody shares for it, so it is never opened, which matters, since its
C2 is its asker's choice (once x·C1 is public, T_victim + x·C1 would "open" to
anyone's key).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import to_scalar
from auth.credentials.credential import KEY_ID_BYTES
from auth.group import (
    GroupError,
    GroupSigned,
    decryption_share,
    g1_from_raw,
    g1_raw,
    order_message,
    parse,
    signature_hash,
    verify,
)
from auth.group.dkg import (
    SLOT_LENGTH,
    Dealer,
    EncryptionKey,
    decrypt_share,
    encrypt_share,
    parse_commitments,
    secret_share,
    verify_share,
)
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable
from ledger.chain import Chain, ChainRevert
from ledger.deploy import Deployment, bind
from ledger.ids import centre_id
from ledger.primitives.files import write_private
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.primitives.names import is_centre_name
from ledger.supervision import Committee, ComplaintState, DealInfo, Opening, Pool, ShareInfo, ShareState, Supervision

STATE_VERSION = 1


class SupervisionUnusable(ValueError):
    """The command cannot be carried out as asked (unknown opening, not a supervisor, a state file of another
    supervisor or contract, no key yet …): nothing was sent."""


@dataclass(frozen=True)
class SupervisorState:
    """What a supervisor keeps secret, bound to one contract and one committee seat."""

    contract: str
    chain_id: int
    index: int
    encryption_secret: int
    coefficients: tuple[int, ...] = ()
    """The dealer's polynomial a_0..a_{t-1}, written before the deal is sent; dropped once the key is made."""
    secret_share: int | None = None
    """x_i, once the key is made and x_i·G is the chain's Y_i."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "contract": self.contract,
                "chain_id": self.chain_id,
                "index": self.index,
                "encryption_secret": _scalar_hex(self.encryption_secret),
                "coefficients": [_scalar_hex(a) for a in self.coefficients],
                "secret_share": None if self.secret_share is None else _scalar_hex(self.secret_share),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> SupervisorState:
        try:
            data = json.loads(text)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {STATE_VERSION}")
            share = data.get("secret_share")
            return cls(
                contract=to_checksum_address(data["contract"]),
                chain_id=int(data["chain_id"]),
                index=int(data["index"]),
                encryption_secret=_scalar(data["encryption_secret"]),
                coefficients=tuple(_scalar(a) for a in data.get("coefficients", [])),
                secret_share=None if share is None else _scalar(share),
            )
        except (ValueError, KeyError, TypeError, AttributeError, HexError) as exc:
            raise SupervisionUnusable(f"{where} is not a supervisor's state file ({exc})") from None

    def save(self, path: Path) -> None:
        """Written 0600, whole or not at all, before anything that depends on it is sent."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, self.to_json(), replace=True)

    @classmethod
    def load(cls, path: Path) -> SupervisorState | None:
        """The state at `path`; None when there is none yet; SupervisionUnusable for a file that is not one."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SupervisionUnusable(f"the state file {path} cannot be read: {exc}") from None
        return cls.from_json(text, str(path))


def _scalar_hex(x: int) -> str:
    return to_hex(int(x).to_bytes(32, "big"))


def _scalar(text: object) -> int:
    return int.from_bytes(from_hex(text, size=32, what="scalar"), "big")


# -- who the caller is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A member centre as the chain has it: what a supervisor needs to reach it."""

    name: str
    account: str
    gateway_url: str
    active: bool


def members(chain: Chain, deployment: Deployment) -> dict[str, Member]:
    """Every member centre on chain (removed ones too, marked inactive), by name."""
    listed = chain.call(bind(chain, deployment, named=True).consortium.functions.members())
    return {m.name: Member(m.name, to_checksum_address(m.account), m.gatewayUrl, bool(m.active)) for m in listed}


def member_of(chain: Chain, deployment: Deployment, account: LocalAccount) -> str:
    """The name of the active member whose chain account `account` is; SupervisionUnusable for any other key."""
    for m in members(chain, deployment).values():
        if m.active and m.account == account.address:
            return m.name
    raise SupervisionUnusable(f"the key given is no member centre's chain account ({account.address}): name yours")


# -- the key's generation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkgProgress:
    """Where one supervisor's part of the key generation stands after a step."""

    supervisor: str
    index: int
    phase: str
    """registration, dealing, complaints, acknowledged, finalized"""
    did: tuple[str, ...]
    """What this step sent, in order (nothing when the chain already had it)."""
    waiting: str | None
    """What it waits for, while not finished."""
    public_key: bytes | None = None
    """Y (raw), once generated and this supervisor's share of it checked and kept."""

    @property
    def finished(self) -> bool:
        return self.public_key is not None


@dataclass
class _Look:
    """One reading of the chain, as supervisor `index` sees the key generation."""

    committee: Committee
    index: int
    now: int
    mine_ok: dict[int, bool] = field(default_factory=dict)
    """Per qualified dealer but me: whether its share for me decrypts and passes the Feldman check."""
    by_me: dict[int, ComplaintState] = field(default_factory=dict)
    against_me: dict[int, ComplaintState] = field(default_factory=dict)

    @property
    def dealing_over(self) -> bool:
        c = self.committee
        return bool(c.deadlines.deal) and (c.registered <= c.dealt or self.now >= c.deadlines.deal)


def dkg_step(
    supervision: Supervision,
    account: LocalAccount,
    centre: str,
    state_path: Path,
    clock: Callable[[], float] = time.time,
) -> DkgProgress:
    """Do what is due of `centre`'s part of the key generation now, reading the chain before each move; the
    state file (0600) keeps its secrets, each written before the transaction that depends on it is sent.

    SupervisionUnusable (nothing sent) when `centre` is not a supervisor, its seat stayed empty (registration
    closed without it), too few registered for any key, or the state file is not its own."""
    did: list[str] = []
    tried: set[tuple] = set()
    received: dict[int, int | None] = {}  # per dealer, its checked share for me (a deal never changes once posted)
    committee = supervision.committee()
    i = committee.index_of(centre)
    if not i:
        raise SupervisionUnusable(
            f"{centre} is not a supervisor of this consortium (they are {', '.join(committee.supervisors)})"
        )
    problem = _seat_problem(committee, i, _chain_now(supervision, clock))
    if problem is not None:
        raise SupervisionUnusable(f"{centre}: {problem}")
    state = _own_state(supervision, i, centre, state_path, generated=committee.finalized)
    while True:
        if committee.finalized:
            y = _keep_secret_share(supervision, committee, i, state, received, state_path)
            return DkgProgress(centre, i, "finalized", tuple(did), None, g1_raw(y))
        if state is None:
            state = SupervisorState(supervision.address, supervision.chain.chain_id, i, EncryptionKey.new().e)
            state.save(state_path)
        look = _look(supervision, committee, i, state, received, _chain_now(supervision, clock))
        move = _next_move(look, state)
        if move is None or move in tried:
            return DkgProgress(centre, i, _phase(look), tuple(did), _waiting(look))
        tried.add(move)
        state = _make(supervision, account, move, look, state, state_path)
        did.append(_said(move))
        committee = supervision.committee()


def _seat_problem(c: Committee, i: int, now: int) -> str | None:
    """Why supervisor i can take no part in the key generation any more, if so (pure): registration closed without
    it, or with fewer supervisors than the threshold (no key can ever be made then)."""
    if not c.deadlines.deal and now < c.registration_deadline:
        return None  # registration is open
    if i not in c.registered:
        return (
            f"registration closed at {_when(c.registration_deadline)} without supervisor {i}: its seat is empty, "
            f"the key is made among the {len(c.registered)} supervisor(s) who registered"
        )
    if not c.deadlines.deal and len(c.registered) < c.threshold:
        return (
            f"only {len(c.registered)} of {c.n} supervisors registered by {_when(c.registration_deadline)}, fewer "
            f"than the threshold {c.threshold}: this Supervision contract can never make a key"
        )
    return None


def _own_state(supervision: Supervision, i: int, centre: str, path: Path, *, generated: bool) -> SupervisorState | None:
    state = SupervisorState.load(path)
    if state is None:
        if generated:
            raise SupervisionUnusable(
                f"no state file at {path}: the key is generated, and {centre}'s share of it is only in the state "
                "file its key generation wrote"
            )
        if supervision.encryption_key(i) is not None:
            raise SupervisionUnusable(
                f"{centre} registered an encryption key already, but {path} does not exist: name the state file "
                "it registered with"
            )
        return None
    if (state.contract, state.chain_id) != (supervision.address, supervision.chain.chain_id):
        raise SupervisionUnusable(
            f"{path} is the state of another consortium's supervisor (contract {state.contract} on chain "
            f"{state.chain_id}), not of {supervision.address}"
        )
    if state.index != i:
        raise SupervisionUnusable(f"{path} is supervisor {state.index}'s state, not {centre}'s (supervisor {i})")
    posted = supervision.encryption_key(i)
    if posted is not None and posted != EncryptionKey.from_secret(state.encryption_secret).E:
        raise SupervisionUnusable(f"{centre} registered another encryption key than the one in {path}")
    return state


def _chain_now(supervision: Supervision, clock: Callable[[], float]) -> int:
    """The time the next block will have at least: the later of the last block's and the clock's."""
    latest = int(supervision.chain.w3.eth.get_block("latest")["timestamp"])
    return max(latest, int(clock()))


def _look(
    supervision: Supervision,
    committee: Committee,
    i: int,
    state: SupervisorState,
    received: dict[int, int | None],
    now: int,
) -> _Look:
    """Read what the next move depends on: the deals (each once, with my share of it checked), my complaints only
    of dealers whose share failed, complaints against me only while some are open."""
    look = _Look(committee, i, now)
    for d in sorted(committee.dealt - committee.disqualified - {i}):
        look.mine_ok[d] = _received(supervision, d, i, state, received) is not None
        if not look.mine_ok[d]:
            look.by_me[d] = supervision.complaint(d, i)
    if i in committee.dealt and committee.open_complaints:
        look.against_me = {j: supervision.complaint(i, j) for j in range(1, committee.n + 1) if j != i}
    return look


def _received(
    supervision: Supervision, d: int, i: int, state: SupervisorState, received: dict[int, int | None]
) -> int | None:
    """Supervisor i's share from dealer d, when it decrypts and passes Feldman's check; None otherwise (read once
    per step: a deal never changes)."""
    if d not in received:
        deal = supervision.deal_of(d)
        received[d] = None if deal is None else _share_from(deal, state.encryption_secret, i)
    return received[d]


def _share_from(deal: DealInfo, e: int, i: int) -> int | None:
    try:
        s = decrypt_share(e, deal.shares, deal.dealer, i)
        commitments = parse_commitments(deal.commitments)
    except GroupError:
        return None
    return s if verify_share(commitments, i, s) else None


def _next_move(look: _Look, state: SupervisorState) -> tuple | None:
    """The one thing to send next, if any (pure): register, deal, answer, complain, acknowledge, finalize."""
    c, i, now = look.committee, look.index, look.now
    if i not in c.registered:
        return ("register",) if not c.deadlines.deal and now < c.registration_deadline else None
    if not c.deadlines.deal:  # dealing opens with the last registration, or with the first deal once it closed
        return ("deal",) if now >= c.registration_deadline and len(c.registered) >= c.threshold else None
    if i not in c.dealt and now < c.deadlines.deal:
        return ("deal",)
    if i in c.dealt and i not in c.disqualified and state.coefficients and now < c.deadlines.answer:
        for j, complaint in sorted(look.against_me.items()):
            if complaint == ComplaintState.OPEN:
                return ("answer", j)
    if now < c.deadlines.complaint:
        for d, ok in sorted(look.mine_ok.items()):
            if not ok and look.by_me[d] == ComplaintState.NONE:
                return ("complain", d)
    settled = all(ok or look.by_me[d] == ComplaintState.ANSWERED for d, ok in look.mine_ok.items())
    if i not in c.acknowledged and look.dealing_over and settled and now < c.deadlines.answer:
        return ("acknowledge",)
    everyone = not c.open_complaints and (c.dealt - c.disqualified) <= c.acknowledged
    if look.dealing_over and (everyone or now >= c.deadlines.answer):
        return ("finalize",)
    return None


def _make(
    supervision: Supervision, account: LocalAccount, move: tuple, look: _Look, state: SupervisorState, path: Path
) -> SupervisorState:
    """Send `move`; a deal's polynomial is kept (0600) before it is sent. A move the chain refuses as out of its
    phase (a deadline passed meanwhile, someone finalized first) is left for the next reading."""
    kind = move[0]
    try:
        if kind == "register":
            supervision.register(account, EncryptionKey.from_secret(state.encryption_secret).E)
        elif kind == "deal":
            if not state.coefficients:
                state = replace(state, coefficients=Dealer.new(look.committee.threshold).coefficients)
                state.save(path)
            dealer = Dealer(state.coefficients)
            supervision.deal(account, dealer.commitments_raw(), _shares_blob(supervision, dealer, look))
        elif kind == "answer":
            supervision.answer(account, move[1], Dealer(state.coefficients).share_for(move[1]))
        elif kind == "complain":
            supervision.complain(account, move[1])
        elif kind == "acknowledge":
            supervision.acknowledge(account)
        else:
            supervision.finalize(account)
    except ChainRevert as exc:
        if exc.reason not in {"WrongPhase", "AlreadyRegistered", "AlreadyDealt", "AlreadyAcknowledged"}:
            raise
    return state


def _shares_blob(supervision: Supervision, dealer: Dealer, look: _Look) -> bytes:
    """The deal's encrypted shares, one 128-byte slot per seat in order; a seat that did not register gets zeros."""
    slots = []
    for j in range(1, look.committee.n + 1):
        key = supervision.encryption_key(j) if j in look.committee.registered else None
        slots.append(bytes(SLOT_LENGTH) if key is None else encrypt_share(dealer.share_for(j), look.index, j, key))
    return b"".join(slots)


def _said(move: tuple) -> str:
    kind = move[0]
    if kind == "answer":
        return f"answered supervisor {move[1]}'s complaint with its share"
    if kind == "complain":
        return f"complained of dealer {move[1]}'s share"
    return {
        "register": "registered an encryption key",
        "deal": "dealt",
        "acknowledge": "acknowledged the shares received",
        "finalize": "finalized the key",
    }[kind]


def _phase(look: _Look) -> str:
    c = look.committee
    if not c.deadlines.deal:
        return "registration"
    if not look.dealing_over:
        return "dealing"
    if look.index in c.acknowledged:
        return "acknowledged"
    return "complaints"


def _waiting(look: _Look) -> str:
    c = look.committee

    def names(indexes: Iterable[int]) -> str:
        return ", ".join(c.supervisors[j - 1] for j in sorted(indexes)) or "nobody"

    everyone = set(range(1, c.n + 1))
    if not c.deadlines.deal:
        if look.now < c.registration_deadline:
            return f"registration of {names(everyone - c.registered)} (until {_when(c.registration_deadline)})"
        return f"the first deal among {names(c.registered)} (registration closed {_when(c.registration_deadline)})"
    if not look.dealing_over:
        return f"deals of {names(c.registered - c.dealt)} (until {_when(c.deadlines.deal)})"
    if c.open_complaints:
        return f"answers to {c.open_complaints} open complaint(s) (until {_when(c.deadlines.answer)})"
    late = (c.dealt - c.disqualified) - c.acknowledged
    if late:
        return f"acknowledgements of {names(late)} (until {_when(c.deadlines.answer)})"
    return f"the answer deadline, {_when(c.deadlines.answer)}, to finalize"


def _keep_secret_share(
    supervision: Supervision,
    committee: Committee,
    i: int,
    state: SupervisorState | None,
    received: dict[int, int | None],
    path: Path,
) -> G1Point:
    """Once the key is generated: x_i = Σ_{d∈QUAL} s_{d,i} (a share revealed in answer to my complaint in place of
    the one dealt), kept only if x_i·G is the chain's Y_i; the polynomial is dropped then (it answered complaints,
    nothing needs it any more). Y."""
    y = supervision.public_key()
    y_i = supervision.verification_key(i)
    if y is None or y_i is None or state is None:
        raise SupervisionUnusable("the key is generated but this supervisor's state or the chain's keys are missing")
    if state.secret_share is not None:
        _check_share(state, y_i, path)
        return y
    shares = []
    for d in sorted(committee.dealt - committee.disqualified):  # QUAL, as finalize left it
        s = _received(supervision, d, i, state, received)
        if s is None and supervision.complaint(d, i) == ComplaintState.ANSWERED:
            s = supervision.revealed_share(d, i)
        if s is None:
            raise SupervisionUnusable(
                f"dealer {d} is qualified but its share for supervisor {i} does not verify and was never "
                "complained of: this supervisor has no share of the key"
            )
        shares.append(s)
    computed = replace(state, secret_share=secret_share(shares), coefficients=())
    _check_share(computed, y_i, path)
    computed.save(path)
    return y


def _check_share(state: SupervisorState, y_i: G1Point, path: Path) -> None:
    if state.secret_share is None or G1Point() * to_scalar(state.secret_share) != y_i:
        raise SupervisionUnusable(
            f"the share of supervisor {state.index} in {path} does not match its verification key on chain: it is "
            "not a share of this key"
        )


def run_dkg(
    supervision: Supervision,
    account: LocalAccount,
    centre: str,
    state_path: Path,
    *,
    wait: bool = False,
    interval: float = 2.0,
    timeout: float | None = None,
    report: Callable[[DkgProgress], None] = lambda _: None,
) -> DkgProgress:
    """One step, or with `wait` steps every `interval` seconds until the key is generated (TimeoutError after
    `timeout`), each reported."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        progress = dkg_step(supervision, account, centre, state_path)
        report(progress)
        if progress.finished or not wait:
            return progress
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the key generation is still waiting for {progress.waiting}")
        time.sleep(interval)


def run_local_dkg(supervision: Supervision, parties: Sequence[tuple[str, LocalAccount, Path]]) -> G1Point:
    """Every local supervisor's steps in turn, round after round, until the key is generated: for a consortium on
    one machine (each party as `(centre, chain key, state file)`). RuntimeError when a round moves nobody."""
    while True:
        progress = [dkg_step(supervision, account, centre, path) for centre, account, path in parties]
        if all(p.finished for p in progress):
            return g1_from_raw(progress[0].public_key or b"", what="Y")
        if not any(p.did for p in progress):
            raise RuntimeError(f"the key generation is stuck: waiting for {progress[0].waiting}")


# -- openings -----------------------------------------------------------------------------------------

MAX_REASON = 512
"""The longest reason an opening may give, in UTF-8 bytes (Supervision.MAX_REASON)."""


@dataclass(frozen=True)
class ServedSignature:
    """A group signature as a centre serves it: its hash checked, parsed, not verified; the rest is the centre's
    word (None where it names nothing usable)."""

    centre: str
    signature: bytes
    signed: GroupSigned
    order: bytes | None
    """The digest of the order the centre says it signs."""
    record: bytes | None
    """The digest of the job's usage record the centre names; None for a grant's hold, or a job without one."""


@dataclass(frozen=True)
class SeenSignature:
    """A group signature found and verified (`find_signature`): a group signature over `order`, checked against the
    chain whoever served it."""

    centre: str
    signature: bytes
    signed: GroupSigned
    order: bytes
    """The digest of the order it signs (its message is order_message(order)): the transaction an opening names."""
    record: bytes | None
    """The digest of the job's usage record, as the centre that served it says; None for a grant's hold."""


def fetch_signature(centre: str, url: str, wanted: bytes) -> ServedSignature:
    """The group signature with hash `wanted` from `centre`'s gateway, unverified (its order and record are the
    centre's word, None when it names none usable); GatewayRefused (404) when it has none, SupervisionUnusable when
    it serves something else."""
    with GatewayClient(url) as client:
        answer = client.anonymous_signature(to_hex(wanted))
    try:
        signature = from_hex(answer["group_signature"], what="group_signature")
        signed = parse(signature)
    except (KeyError, TypeError, ValueError) as exc:  # GroupError and HexError are ValueErrors
        raise SupervisionUnusable(f"{centre} answered no group signature for {to_hex(wanted)}: {exc}") from None
    if signature_hash(signature) != wanted:
        raise SupervisionUnusable(f"{centre} served a group signature whose hash is not {to_hex(wanted)}")
    return ServedSignature(centre, signature, signed, _digest(answer, "order"), _digest(answer, "record"))


def _digest(answer: dict, name: str) -> bytes | None:
    try:
        return from_hex(answer[name], size=32, what=name)
    except (KeyError, TypeError, ValueError):
        return None


def issuer_keys_on_chain(chain: Chain, deployment: Deployment) -> Callable[[str, str], bytes | None]:
    """`issuer_pk_for` for `auth.group.verify` from the IdentityRegistry alone: any key the home ever registered on
    chain (a key rotated or ended since does not make the signatures made under it unaccountable)."""
    registry = bind(chain, deployment, named=True).identity_registry
    keys: dict[str, list] = {}

    def lookup(home: str, key_id: str) -> bytes | None:
        if registry is None or not is_centre_name(home):
            return None
        if home not in keys:
            keys[home] = list(chain.call(registry.functions.issuerKeys(centre_id(home))))
        for key in keys[home]:
            if bytes(key.keyId)[:KEY_ID_BYTES].hex() == key_id:
                return bytes(key.pk)
        return None

    return lookup


def verify_on_chain(
    chain: Chain, deployment: Deployment, signature: bytes, transaction: bytes, supervision_key: G1Point
) -> GroupSigned:
    """What a supervisor checks before it shares, with nothing but the chain: `signature` is a group signature over
    exactly `transaction` (an order digest: its message is order_message(transaction)), by an issuer key its home
    registered on chain, its tracing key encrypted under the supervisors' key. GroupError otherwise. Expiry and
    revocation are not checked: an old signature stays accountable."""
    return verify(
        signature,
        order_message(transaction),
        issuer_pk_for=issuer_keys_on_chain(chain, deployment),
        supervision_key=supervision_key,
    )


def find_signature(
    chain: Chain,
    deployment: Deployment,
    wanted: bytes,
    centre: str | None = None,
    gateway: str | None = None,
    *,
    transaction: bytes | None = None,
    supervision_key: G1Point | None = None,
) -> SeenSignature:
    """The group signature with hash `wanted`, from `centre` (at `gateway`, or its URL on chain), or else from
    whichever member's gateway serves it (the centre that ran its job, the home that granted its order), verified
    over `transaction` (default: the order the centre names) with `verify_on_chain` and `supervision_key` (default:
    the deployment's Supervision key). Who serves it does not matter: an answer that does not verify is passed over.
    SupervisionUnusable when no centre serves it verified."""
    if supervision_key is None:
        try:
            supervision_key = Supervision.of(chain, deployment).public_key()
        except ValueError as exc:
            raise SupervisionUnusable(str(exc)) from None
        if supervision_key is None:
            raise SupervisionUnusable("the supervisors have not generated their key yet: nothing can be opened")
    known = members(chain, deployment)
    if centre is not None and centre not in known:
        raise SupervisionUnusable(f"{centre!r} is not a member centre ({', '.join(sorted(known))})")
    asked = [centre] if centre is not None else sorted(n for n, m in known.items() if m.active)
    silent, invalid = [], []
    for name in asked:
        try:
            seen = fetch_signature(name, gateway or known[name].gateway_url, wanted)
        except (GatewayRefused, GatewayUnreachable, SupervisionUnusable) as exc:
            silent.append(f"{name}: {exc}")
            continue
        message = seen.order if transaction is None else transaction
        if message is None:
            invalid.append(f"{name} serves it, but names no order it signs")
            continue
        try:
            signed = verify_on_chain(chain, deployment, seen.signature, message, supervision_key)
        except GroupError as exc:
            over = f"the order {name} names" if transaction is None else "the opening's transaction"
            invalid.append(f"{name} serves it, but it is no valid group signature over {over} {to_hex(message)}: {exc}")
            continue
        return SeenSignature(name, seen.signature, signed, message, seen.record)
    if invalid:
        raise SupervisionUnusable(f"the group signature {to_hex(wanted)} cannot be opened: " + "; ".join(invalid))
    raise SupervisionUnusable(
        f"no centre served the group signature {to_hex(wanted)}, so nobody can check what it would open: "
        + "; ".join(silent)
    )


def _committee_seat(supervision: Supervision, centre: str) -> int:
    i = supervision.supervisor_index(centre)
    if not i:
        raise SupervisionUnusable(f"{centre} is not a supervisor of this consortium")
    return i


def request_opening(
    supervision: Supervision,
    deployment: Deployment,
    account: LocalAccount,
    wanted: bytes,
    reason: str,
    *,
    centre: str | None = None,
    gateway: str | None = None,
) -> int:
    """Ask the committee to open the group signature with hash `wanted`, found at a centre that keeps it (`centre`,
    or any) and verified over the order it signs: that order's digest is the transaction on the record, with the
    signature's home. The opening's id. Any member may ask; nothing is sent for a signature that does not verify.
    Another opening of the same ciphertext (anyone's, naming any transaction) blocks nothing: the openings of one
    ciphertext pool their shares, and each opening a supervisor shared for is opened. A request for a ciphertext
    opened already is recorded, and gets no share: the opening that was shared for is its answer."""
    if not reason.strip() or len(reason.encode("utf-8")) > MAX_REASON:
        raise SupervisionUnusable(f"give a reason of 1 to {MAX_REASON} bytes: it is on the record with the opening")
    key = supervision.public_key()
    if key is None:
        raise SupervisionUnusable("the supervisors have not generated their key yet: nothing can be opened")
    seen = find_signature(supervision.chain, deployment, wanted, centre, gateway, supervision_key=key)
    return supervision.request_opening(account, seen.signature, seen.signed.home, seen.order, reason)


@dataclass(frozen=True)
class Shared:
    """What a supervisor's share did for an opening."""

    opening: int
    index: int
    accepted: bool
    tracing_key: bytes | None
    """The opening's T (raw), when this share opened its ciphertext's pool."""


def share(
    supervision: Supervision,
    deployment: Deployment,
    account: LocalAccount,
    centre: str,
    state_path: Path,
    opening_id: int,
    *,
    serving: str | None = None,
    gateway: str | None = None,
) -> Shared:
    """`centre`'s decryption share for an opening, with its proof, sent only once the supervisor has checked what it
    opens, with nothing but the chain: the group signature, fetched from a centre that keeps it (`serving`, or
    whichever serves it; who serves it does not matter), must hash to the opening's and be a valid group signature
    over exactly the opening's transaction (`verify_on_chain`), by a member of the opening's home. So nobody gets
    a ciphertext of their choosing, or another transaction's signer, opened. The share counts for every opening of
    the ciphertext (its pool), so it is given once per ciphertext, its proof bound to the pool's id.
    SupervisionUnusable (nothing sent) otherwise, and for an unknown or opened opening, a share already given for
    its ciphertext (through this opening or another) or a state file not this key's."""
    i = _committee_seat(supervision, centre)
    try:
        opening = supervision.opening(opening_id)
    except ChainRevert as exc:
        if exc.reason != "UnknownOpening":
            raise
        count = supervision.opening_count()
        raise SupervisionUnusable(f"there is no opening {opening_id} (openings so far: {count})") from None
    if opening.opened:
        raise SupervisionUnusable(f"opening {opening_id} is opened already: no share is needed")
    if supervision.pool(opening.pool).opened:
        raise SupervisionUnusable(
            f"the ciphertext of opening {opening_id} was opened already, through the openings of pool {opening.pool} "
            f"that supervisors shared for (`supervise status --opening {opening.pool}`): no share is taken any more"
        )
    given = supervision.share_of(opening_id, i)
    if given.state != ShareState.NONE:
        also = "" if given.given == opening_id else f": it counts for opening {opening_id}, of the same ciphertext"
        raise SupervisionUnusable(
            f"{centre} gave its share for opening {given.given} already ({given.state.name.lower()}){also}"
        )
    state = SupervisorState.load(state_path)
    if state is None:
        raise SupervisionUnusable(f"no state file at {state_path}: name the one `xcentre supervise dkg` wrote")
    if (state.contract, state.index) != (supervision.address, i):
        raise SupervisionUnusable(f"{state_path} is not {centre}'s state for this consortium's supervision")
    y_i = supervision.verification_key(i)
    if y_i is None:
        raise SupervisionUnusable("the supervisors' key is not generated yet")
    _check_share(state, y_i, state_path)
    y = supervision.public_key()
    if y is None:
        raise SupervisionUnusable("the supervisors' key is not generated yet")
    try:
        seen = find_signature(
            supervision.chain,
            deployment,
            opening.signature_hash,
            serving,
            gateway,
            transaction=opening.transaction,
            supervision_key=y,
        )
    except SupervisionUnusable as exc:
        raise SupervisionUnusable(
            f"{centre} does not share for opening {opening_id}: {exc} (nothing was sent)"
        ) from None
    problems = _mismatches(opening, seen)
    if problems:
        raise SupervisionUnusable(
            f"{centre} does not share for opening {opening_id}: " + "; ".join(problems) + " (nothing was sent)"
        )
    assert state.secret_share is not None  # checked by _check_share
    submitted = supervision.submit_share(
        account, opening_id, decryption_share(state.secret_share, i, opening.c1, opening.pool)
    )
    key = None if submitted.tracing_key is None else g1_raw(submitted.tracing_key)
    return Shared(opening_id, i, submitted.accepted, key)


def _mismatches(opening: Opening, seen: SeenSignature) -> list[str]:
    """What keeps a supervisor from sharing for `opening` once its signature verified over its transaction (pure)."""
    problems = []
    if seen.signed.home != opening.home:
        problems.append(f"the signature is by a member of {seen.signed.home}, but the opening names {opening.home}")
    if (seen.signed.c1, seen.signed.c2) != (opening.c1, opening.c2):
        problems.append("the signature's ciphertext is not the one on record")
    if seen.order != opening.transaction:
        problems.append(f"the signature signs order {to_hex(seen.order)}, not the opening's transaction")
    return problems


# -- the record ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    """The committee, its key and openings, as the chain has them: each opening with the shares of its pool (the
    openings of its ciphertext), each share naming the opening it was given for (those openings are the ones its
    pool opened)."""

    committee: Committee
    public_key: G1Point | None
    verification_keys: dict[int, G1Point]
    openings: list[tuple[Opening, list[ShareInfo]]]
    pools: dict[int, Pool] = field(default_factory=dict)


def overview(supervision: Supervision, opening: int | None = None) -> Overview:
    """Read the record: every opening, or only `opening` (SupervisionUnusable for one never asked); each pool once."""
    committee = supervision.committee()
    y = supervision.public_key()
    keys = {}
    if y is not None:
        keys = {j: k for j in range(1, committee.n + 1) if (k := supervision.verification_key(j)) is not None}
    count = supervision.opening_count()
    if opening is not None and not 1 <= opening <= count:
        raise SupervisionUnusable(f"there is no opening {opening} (openings so far: {count})")
    ids = [opening] if opening is not None else list(range(1, count + 1))
    pools: dict[int, Pool] = {}
    shares: dict[int, list[ShareInfo]] = {}
    openings = []
    for n in ids:
        o = supervision.opening(n)
        if o.pool not in pools:
            pools[o.pool] = supervision.pool(o.pool)
            shares[o.pool] = [supervision.share_of(o.pool, j) for j in range(1, committee.n + 1)]
        openings.append((o, [replace(info, opening=n) for info in shares[o.pool]]))
    return Overview(committee, y, keys, openings, pools)


def status_lines(view: Overview) -> list[str]:
    """The record as text (pure): committee, key, then each opening with its shares, result and identification."""
    c = view.committee
    seats = ", ".join(f"{name} ({j})" for j, name in enumerate(c.supervisors, 1))
    lines = [f"committee: {seats}; threshold {c.threshold} of {c.n}"]
    if view.public_key is not None:
        qualified = sorted(c.dealt - c.disqualified)
        lines.append(f"key: generated, Y = {to_hex(g1_raw(view.public_key))}")
        lines.append(f"qualified dealers: {', '.join(c.supervisors[j - 1] for j in qualified)}")
    elif not c.deadlines.deal:
        lines.append(
            f"key: not generated: registered {len(c.registered)} of {c.n} (registration closes "
            f"{_when(c.registration_deadline)}; the key is made among those registered, at least {c.threshold})"
        )
    else:
        lines.append(
            f"key: being generated: dealt {len(c.dealt)} of {len(c.registered)} registered, acknowledged "
            f"{len(c.acknowledged)}, {c.open_complaints} complaint(s) open; deadlines: deals "
            f"{_when(c.deadlines.deal)}, complaints {_when(c.deadlines.complaint)}, answers {_when(c.deadlines.answer)}"
        )
    for j, name in enumerate(c.supervisors, 1):
        marks = [
            w for w, s in (("registered", c.registered), ("dealt", c.dealt), ("acknowledged", c.acknowledged)) if j in s
        ]
        if j in c.disqualified:
            marks.append("DISQUALIFIED")
        key = view.verification_keys.get(j)
        lines.append(
            f"  {name} ({j}): {', '.join(marks) or 'nothing yet'}" + (f"; Y_{j} = {to_hex(g1_raw(key))}" if key else "")
        )
    lines.append(f"openings: {len(view.openings)}" if view.openings else "openings: none")
    for opening, shares in view.openings:
        lines.append(
            f"opening {opening.id}: asked by {opening.requester} at {_when(opening.requested_at)} for transaction "
            f"{to_hex(opening.transaction)}, signed by a member of {opening.home} "
            f"(signature {to_hex(opening.signature_hash)})"
        )
        lines.append(f"  reason: {opening.reason}")
        pool = view.pools.get(opening.pool)
        others = [k for k in (pool.openings if pool else ()) if k != opening.id]
        if others:
            listed = ", ".join(map(str, others[:MAX_LISTED])) + (", …" if len(others) > MAX_LISTED else "")
            lines.append(
                f"  ciphertext: pool {opening.pool}, also asked for by opening(s) {listed} (the shares below count "
                "for each; a share opens the one it was given for)"
            )
        for info in shares:
            who = f"{c.supervisors[info.index - 1]} ({info.index})"
            state = {
                ShareState.NONE: "no share",
                ShareState.ACCEPTED: "accepted",
                ShareState.REJECTED: "REJECTED: its proof does not verify",
            }
            given = f", given for opening {info.given}" if others and info.state != ShareState.NONE else ""
            lines.append(f"  share {who}: {state[info.state]}{given}")
        if opening.opened and opening.tracing_key is not None:
            lines.append(
                f"  result: opened by {opening.accepted} shares, tracing key T = {to_hex(g1_raw(opening.tracing_key))}"
            )
        elif pool is not None and pool.opened:
            through = sorted({info.given for info in shares if info.state == ShareState.ACCEPTED})
            lines.append(
                f"  result: not opened: no supervisor shared for it; its ciphertext was opened through opening(s) "
                f"{', '.join(map(str, through))}"
            )
        else:
            lines.append(f"  result: not opened ({opening.accepted} of {c.threshold} shares accepted)")
        if opening.enrolment is not None:
            lines.append(f"  identified by {opening.home}: enrolment {to_hex(opening.enrolment)}")
        elif opening.opened:
            lines.append(f"  identified: not yet ({opening.home} maps T to its member)")
    return lines


MAX_LISTED = 10
"""Other openings of a ciphertext that `status_lines` names before it abbreviates."""


def _when(t: int) -> str:
    """UTC seconds, with the date a person reads."""
    return f"{t} ({datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC)"


@dataclass(frozen=True)
class Supervisor:
    """One supervisor's hands: its chain key, its state file, the consortium's contract (what the CLI gathers
    from its arguments, and what a local consortium gives its tests and demo)."""

    supervision: Supervision
    deployment: Deployment
    centre: str
    account: LocalAccount = field(repr=False)
    state_path: Path

    def dkg_step(self) -> DkgProgress:
        return dkg_step(self.supervision, self.account, self.centre, self.state_path)

    def request(self, wanted: bytes, reason: str, *, centre: str | None = None, gateway: str | None = None) -> int:
        return request_opening(
            self.supervision, self.deployment, self.account, wanted, reason, centre=centre, gateway=gateway
        )

    def share(self, opening: int, *, serving: str | None = None, gateway: str | None = None) -> Shared:
        return share(
            self.supervision,
            self.deployment,
            self.account,
            self.centre,
            self.state_path,
            opening,
            serving=serving,
            gateway=gateway,
        )
