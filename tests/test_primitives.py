"""ledger.primitives: centre names, hex, canonical JSON and private files, each in one place that every package uses."""

from __future__ import annotations

import base64
import json
import math
import os
import stat

import pytest

from auth.credentials import PresentationRequest
from auth.tokens import TokenIssuer, generate_key
from gateway.api.schemas import ExchangeRequest, JobRequest
from gateway.node.config import GatewayConfig
from ledger.ids import InvalidName, centre_id
from ledger.primitives.canonical import CanonicalError, canonical_bytes, canonical_json
from ledger.primitives.files import write_private
from ledger.primitives.hex import HexError, bytes32, from_hex, to_hex
from ledger.primitives.names import CENTRE_NAME_PATTERN, is_centre_name
from ledger.records import UsageRecord

CONFIG = {
    "centre": "hpc-a",
    "data_dir": "/var/x",
    "chain_url": "http://127.0.0.1:8545",
    "deployment": "/d.json",
    "chain_key_file": "/k/chain.key",
    "token_key_file": "/k/token.pem",
    "issuer_key_file": "/k/issuer.key",
    "credential_schema": "/s.toml",
    "operator_key": "op",
    "policy_file": "/p.cedar",
    "ldap_url": "ldap://127.0.0.1",
    "ldap_base_dn": "dc=x",
}
NAMES = ["a", "hpc-a", "0", "-", "ai-c", "x" * 32]
NOT_NAMES = ["", "x" * 33, "HPC-A", "hpc a", "hpc_a", "hpc-a\n", "\nhpc-a", "hpc.a", "é", "hpc-ä", "auto\x00"]


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_centre_names(name):
    assert is_centre_name(name)


@pytest.mark.parametrize("name", [*NOT_NAMES, None, 5, b"hpc-a"])
def test_not_centre_names(name):
    assert not is_centre_name(name)


def _accepted(check) -> bool:
    try:
        check()
    except (ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize("name", NAMES + NOT_NAMES)
def test_every_check_of_a_centre_name_agrees(name):
    """The chain id, the token issuer, sign-on requests and the HTTP API accept exactly the same names."""
    key = generate_key()
    checks = {
        "ledger.ids": lambda: centre_id(name),
        "auth.tokens": lambda: TokenIssuer(name, key),
        "auth.credentials": lambda: PresentationRequest(
            nonce="ab" * 32, verifier=name, attributes=("home",), expires_at=1
        ),
        "gateway.api.schemas audience": lambda: ExchangeRequest(audience=name),
        "gateway.api.schemas centre": lambda: JobRequest(walltime=60, command=["true"], centre=name),
        "gateway.node.config": lambda: GatewayConfig(**(CONFIG | {"centre": name})),
    }
    verdicts = {where: _accepted(check) for where, check in checks.items()}
    assert verdicts == {where: is_centre_name(name) for where in checks}


def test_the_pattern_is_the_rule_anchored():
    assert CENTRE_NAME_PATTERN == "^[a-z0-9-]{1,32}$"
    with pytest.raises(InvalidName):
        centre_id("hpc-a\n")


# -- hex --------------------------------------------------------------------------------


def test_hex_round_trip():
    raw = bytes(range(256))
    assert to_hex(raw) == "0x" + raw.hex()
    assert from_hex(to_hex(raw)) == raw
    assert from_hex(raw.hex()) == raw
    assert from_hex("0XABcd") == b"\xab\xcd"
    assert from_hex("0x") == b"" and to_hex(b"") == "0x"
    assert to_hex(bytearray(b"\x01")) == "0x01"


@pytest.mark.parametrize("text", ["0xabc", "ab cd", " abcd", "abcd\n", "0xzz", "x0ab", "0x0xab", "éé", "0x-1"])
def test_hex_is_strict(text):
    with pytest.raises(HexError, match="signature is not hex"):
        from_hex(text, what="signature")


def test_hex_sizes_and_types():
    assert bytes32("0x" + "11" * 32) == b"\x11" * 32
    assert bytes32(b"\x22" * 32) == b"\x22" * 32
    with pytest.raises(HexError, match="root must be 32 bytes, got 31"):
        bytes32("11" * 31, what="root")
    with pytest.raises(HexError, match="root must be 32 bytes, got 33"):
        bytes32(b"\x00" * 33, what="root")
    with pytest.raises(HexError, match="key must be a hex string, got int"):
        from_hex(5, what="key")
    with pytest.raises(ValueError):  # HexError is a ValueError: callers that catch ValueError keep working
        from_hex("0x1")


# -- canonical JSON ---------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_and_ascii():
    value = {"b": [1, {"z": None, "a": True}], "a": "café ☃ \U0001d11e", "c": -0, "d": 2**70}
    text = canonical_json(value)
    assert text == (
        '{"a":"caf\\u00e9 \\u2603 \\ud834\\udd1e","b":[1,{"a":true,"z":null}],"c":0,"d":1180591620717411303424}'
    )
    assert text.isascii() and json.loads(text) == value
    assert canonical_bytes(value) == text.encode("ascii")
    assert canonical_json(json.loads(text)) == text  # a fixed point


def test_canonical_json_serialises_any_string():
    assert canonical_json({"x": "\ud800"}) == '{"x":"\\ud800"}'  # a lone surrogate, as json.loads may hand over


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, b"bytes", {1, 2}, object(), {"k": [math.nan]}])
def test_canonical_json_refuses_what_json_cannot_carry(value):
    with pytest.raises(CanonicalError, match="not plain JSON"):
        canonical_json(value)
    assert issubclass(CanonicalError, ValueError)


def test_signed_and_stored_spellings_are_the_canonical_one():
    """Session tokens, BBS presentation headers and usage records are spelt canonically, byte for byte."""
    issuer = TokenIssuer("hpc-a", generate_key())
    token = issuer.issue("zoé@hpc-a", "hpc-a", {"cn": "Zoé Ærø", "groups": ["ß"]}, now=1_700_000_000)
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert payload == canonical_bytes(json.loads(payload))

    request = PresentationRequest(
        nonce="ab" * 32, verifier="cloud-b", attributes=("department",), expires_at=1_700_000_300
    )
    # the header a proof is bound to: fixed on the wire, so pinned here byte for byte
    assert request.presentation_header == (
        b'{"expires_at":1700000300,"nonce":"' + b"ab" * 32 + b'","verifier":"cloud-b"}'
    )
    assert request.presentation_header == canonical_bytes(
        {"nonce": request.nonce, "verifier": request.verifier, "expires_at": request.expires_at}
    )

    record = UsageRecord(
        record_id=b"\x01" * 32,
        job_id=b"\x02" * 32,
        serving_centre=centre_id("hpc-a"),
        home_centre=centre_id("cloud-b"),
        user=b"\x03" * 32,
        epoch=1,
        started_at=10,
        ended_at=20,
        cpu_millis=5,
        wall_millis=6,
        max_rss_kib=7,
        gpu_millis=0,
        rates_version=1,
        price=99,
        order=b"\x04" * 32,
        grant=b"\x05" * 32,
        lock_hash=b"\x06" * 32,
        decision=b"\x07" * 32,
    )
    assert record.to_json() == canonical_json(record.to_dict())


# -- private files ----------------------------------------------------------------------


@pytest.fixture
def open_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_files_are_for_their_owner_whatever_the_umask(tmp_path, open_umask):
    path = tmp_path / "secret"
    write_private(path, "s3cret\n")
    assert path.read_text() == "s3cret\n" and _mode(path) == 0o600
    write_private(tmp_path / "raw", b"\x00\xff")
    assert (tmp_path / "raw").read_bytes() == b"\x00\xff" and _mode(tmp_path / "raw") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "secret"]  # no temporary left behind


def test_a_private_file_is_never_overwritten_unless_asked(tmp_path):
    path = tmp_path / "chain.key"
    write_private(path, "first")
    with pytest.raises(FileExistsError):
        write_private(path, "second")
    assert path.read_text() == "first"
    write_private(path, "second", replace=True)
    assert path.read_text() == "second" and _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["chain.key"]


def test_a_replaced_private_file_takes_the_private_mode(tmp_path):
    path = tmp_path / "wallet.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new", replace=True)
    assert path.read_text() == "new" and _mode(path) == 0o600


def test_a_failed_write_leaves_the_old_file_or_none(tmp_path, monkeypatch):
    path = tmp_path / "token.pem"
    write_private(path, "old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_private(path, "new", replace=True)
    with pytest.raises(OSError, match="No space left"):
        write_private(tmp_path / "issuer.key", "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["token.pem"]  # no half key, no temporary


def test_a_planted_temporary_plays_no_part(tmp_path):
    """Whatever sits at a name a writer might use for its temporary file is neither followed nor reused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    for name in (".wallet.json.tmp", "wallet.json.tmp"):
        (tmp_path / name).symlink_to(elsewhere)
    write_private(tmp_path / "wallet.json", "{}", replace=True)
    assert elsewhere.read_text() == "untouched"
    assert (tmp_path / "wallet.json").read_text() == "{}" and _mode(tmp_path / "wallet.json") == 0o600


def test_the_wallet_stays_private_over_a_stale_temporary(tmp_path):
    """A wallet saved where an old temporary (mode 0644, or a link) was left is still 0600 and writes nowhere else."""
    from pathlib import Path

    from auth.credentials import CredentialSchema, generate_issuer_key, issue_credential
    from gateway.client.wallet import Wallet

    schema = CredentialSchema.load(
        Path(__file__).resolve().parents[1] / "gateway" / "demo" / "data" / "credential_schema.toml"
    )
    sk, pk = generate_issuer_key(b"hpc-a issuer key material, 32+ bytes")
    values = {
        "home": "hpc-a",
        "pseudonym": "7f" * 32,
        "department": "physics",
        "employee_type": ["staff"],
        "groups": ["physics"],
        "clearance": 2,
        "revocation_epoch": 0,
    }
    wallet = Wallet(
        "hpc-a", "http://127.0.0.1:1", issue_credential(schema, sk, pk, values, now=1_700_000_000), pk, schema
    )
    path = tmp_path / "wallet.json"
    stale = tmp_path / "wallet.json.tmp"
    stale.write_text("left by a crash")
    stale.chmod(0o644)
    wallet.save(path)
    assert _mode(path) == 0o600
    assert Wallet.load(path) == wallet

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    stale.unlink()
    stale.symlink_to(elsewhere)
    wallet.save(path)
    assert elsewhere.read_text() == "untouched" and _mode(path) == 0o600


def test_primitives_need_nothing_but_the_standard_library():
    """Importable with no site-packages at all (ledger/__init__ imports nothing), so auth may import them too."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r})\n"
        "import ledger.primitives.canonical, ledger.primitives.files, ledger.primitives.hex, "
        "ledger.primitives.names\n"
        "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert loaded - set(sys.stdlib_module_names) - {"ledger", "__main__"} == set()
