"""`xcentre governance propose|vote|list|update` on the embedded chain, through the real command line.

The commands read --chain, --deployment and --key-file as `xcentre rates publish` does;
the test points `connect` at its embedded chain. Text fits 80 columns and cuts nothing;
--json gives the same facts; refused input is exit 2 with {"error", "reasons"} and sends nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

import ledger.chain
from gateway.client.cli import main
from ledger.ids import centre_id
from tests.test_contracts import Consortium, active_names, make_consortium

LONG_URL = "https://gateway.a-rather-long-centre-name.example.org:8443/xcentre/v1/base"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Consortium, Path]:
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=2)
    monkeypatch.setattr(ledger.chain, "connect", lambda url="embedded", **_: k.chain)
    k.deployment.to_json(tmp_path / "deployment.json")
    for name, acct in k.accounts.items():
        (tmp_path / f"{name}.key").write_text(acct.key.hex() + "\n")
    return k, tmp_path


def xcentre(world, who: str | None, *argv: str, capsys) -> tuple[int, str, str]:
    """Runs `xcentre governance …` as `who` (a member name, or None for no key)."""
    _, tmp = world
    action, rest = argv[0], list(argv[1:])
    where = ["--chain", "embedded", "--deployment", str(tmp / "deployment.json")]
    if who is not None:
        where += ["--key-file", str(tmp / f"{who}.key")]
    if action == "propose":
        kind, rest = rest[0], rest[1:]
        args = ["governance", "propose", kind, *where, *rest]
    else:
        args = ["governance", action, *where, *rest]
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, f"{len(line)} columns: {line!r}"


def test_fund_a_member_by_vote_from_the_command_line(world, capsys):
    k, _ = world
    code, out, err = xcentre(world, "hpc-a", "propose", "fund", "cloud-c", "250000", capsys=capsys)
    assert (code, err) == (0, "")
    fits(out)
    assert "hpc-a proposed #1: fund cloud-c with 250,000 credit units" in out
    assert "open: 1 of 2 votes, 1 more to carry it (`xcentre governance vote 1`)" in out
    balance = k.c.credit.functions.balanceOf(k.accounts["cloud-c"].address)
    assert balance.call() == 0
    code, out, _ = xcentre(world, "hpc-b", "vote", "1", "--json", capsys=capsys)
    step = json.loads(out)
    assert code == 0 and step["carried"] and step["by"] == "hpc-b"
    assert step["proposal"] | {"voters": None, "expires_at": None} == {
        "id": 1,
        "action": "fund",
        "subject": "cloud-c",
        "amount": 250_000,
        "votes": 2,
        "quorum": 2,
        "executed": True,
        "expires_at": None,
        "expired": False,
        "state": "carried",
        "voters": None,
        "member": None,
    }
    assert balance.call() == 250_000
    code, out, _ = xcentre(world, None, "list", capsys=capsys)
    assert "#1 fund cloud-c with 250,000 credit units: carried, 2 votes of current members" in out


def test_admit_remove_and_quorum_from_the_command_line(world, capsys):
    k, _ = world
    newcomer = Account.create()
    code, out, err = xcentre(
        world,
        "cloud-c",
        "propose",
        "admit",
        "--name",
        "ai-d",
        "--account",
        newcomer.address,
        "--gateway-url",
        LONG_URL,
        "--token-key",
        "0x" + "ab" * 32,
        "--per-cpu-second",
        "40000",
        "--per-gpu-second",
        "0",
        "--per-gib-hour",
        "200000",
        capsys=capsys,
    )
    assert code == 0, err
    fits(out)
    assert "note: ai-d's account holds 0 wei of gas money" in " ".join(out.split())  # its gateway could not pay
    code, out, _ = xcentre(world, "hpc-a", "vote", "1", capsys=capsys)
    assert "carried out in this transaction, with 2 votes" in out and active_names(k)[-1] == "ai-d"
    assert xcentre(world, "hpc-a", "propose", "quorum", "3", capsys=capsys)[0] == 0
    assert xcentre(world, "hpc-b", "vote", "2", capsys=capsys)[0] == 0
    assert k.c.consortium.functions.quorum().call() == 3
    code, out, _ = xcentre(world, "hpc-a", "propose", "remove", "hpc-b", capsys=capsys)
    assert code == 0 and "open: 1 of 3 votes, 2 more to carry it" in out
    assert xcentre(world, "cloud-c", "vote", "3", capsys=capsys)[0] == 0
    assert "hpc-b" in active_names(k)  # 2 of 3: not yet
    assert xcentre(world, "hpc-b", "vote", "3", capsys=capsys)[0] == 0  # its own removal counts too
    assert active_names(k) == ["hpc-a", "cloud-c", "ai-d"]

    code, out, _ = xcentre(world, None, "list", capsys=capsys)
    assert code == 0
    fits(out)
    assert out.splitlines()[0] == "quorum 3 of 3 active members: hpc-a, cloud-c, ai-d"
    assert "#1 admit ai-d: carried" in out and "#2 set the quorum to 3: carried" in out
    assert "#3 remove hpc-b: carried" in out
    assert LONG_URL in out and newcomer.address in out  # wrapped, never cut
    assert "rates per CPU-second 40,000" in out
    code, out, _ = xcentre(world, None, "list", "--open", "--json", capsys=capsys)
    assert json.loads(out) == {"quorum": 3, "members": ["hpc-a", "cloud-c", "ai-d"], "proposals": []}


def test_list_shows_open_proposals_with_their_votes(world, capsys):
    xcentre(world, "hpc-a", "propose", "fund", "hpc-b", "7", capsys=capsys)
    code, out, _ = xcentre(world, None, "list", "--open", capsys=capsys)
    assert code == 0
    fits(out)
    text = " ".join(out.split())  # as wrapped at 80 columns
    assert "#1 fund hpc-b with 7 credit units: open, 1 of 2 votes (1 more to carry it), expires 20" in text
    assert "voted: hpc-a" in out
    listed = json.loads(xcentre(world, None, "list", "--json", capsys=capsys)[1])
    assert [(p["action"], p["subject"], p["amount"], p["votes"], p["executed"]) for p in listed["proposals"]] == [
        ("fund", "hpc-b", 7, 1, False)
    ]


@pytest.mark.parametrize(
    ("who", "argv", "reason"),
    [
        ("hpc-a", ("propose", "quorum", "0"), "invalid-quorum"),
        ("hpc-a", ("propose", "quorum", "4"), "invalid-quorum"),
        ("hpc-a", ("propose", "fund", "nobody", "5"), "not-a-member"),
        ("hpc-a", ("propose", "fund", "hpc-b", "0"), "invalid-amount"),
        ("hpc-a", ("propose", "fund", "hpc-b", "-5"), "invalid-amount"),
        ("hpc-a", ("propose", "remove", "nobody"), "not-a-member"),
        ("hpc-a", ("vote", "1"), "unknown-proposal"),
        ("hpc-a", ("update", "--token-key", "0x1234"), "invalid-token-key"),
        ("hpc-a", ("update",), "nothing-to-update"),
        ("stranger", ("propose", "quorum", "1"), "not-a-member"),
        ("missing", ("propose", "quorum", "1"), "unusable-input"),
        ("garbage", ("propose", "quorum", "1"), "unusable-input"),
    ],
)
def test_refused_input_is_exit_2_with_a_reason_and_sends_nothing(world, capsys, who, argv, reason):
    k, tmp = world
    (tmp / "stranger.key").write_text(Account.create().key.hex())
    (tmp / "garbage.key").write_text("not a key\n")
    block = k.chain.block_number()
    code, out, err = xcentre(world, who, *argv, "--json", capsys=capsys)
    assert (code, out) == (2, "")
    error = json.loads(err)
    assert error["reasons"] == [reason] and error["error"]
    assert "not a key" not in error["error"]  # never a key file's content
    assert k.chain.block_number() == block  # nothing sent
    code, out, err = xcentre(world, who, *argv, capsys=capsys)
    assert code == 2 and err.startswith("error: ")
    fits(err)


def test_a_second_vote_is_refused(world, capsys):
    k, _ = world
    xcentre(world, "hpc-a", "propose", "quorum", "3", capsys=capsys)
    code, _, err = xcentre(world, "hpc-a", "vote", "1", capsys=capsys)
    assert code == 2 and "hpc-a has already voted for proposal 1" in err
    assert k.c.consortium.functions.quorum().call() == 2


def test_a_member_rotates_its_token_key_from_the_command_line(world, capsys):
    k, _ = world
    new_key = "0x" + "cd" * 32
    code, out, _ = xcentre(world, "hpc-b", "update", "--token-key", new_key, capsys=capsys)
    assert code == 0
    fits(out)
    assert f"token key: {new_key}" in out and "gateway URL: http://hpc-b.example:8000" in out
    record = k.c.consortium.functions.member(centre_id("hpc-b")).call()
    assert (record[3], "0x" + bytes(record[4]).hex()) == ("http://hpc-b.example:8000", new_key)
    code, out, _ = xcentre(world, "hpc-b", "update", "--gateway-url", LONG_URL, "--json", capsys=capsys)
    assert json.loads(out)["gateway_url"] == LONG_URL and json.loads(out)["token_key"] == new_key


def test_a_fresh_token_key_is_made_and_published_in_one_step(world, capsys):
    from auth.tokens import load_private_key, public_key_bytes

    k, tmp = world
    pem = tmp / "token-2.pem"
    code, out, err = xcentre(world, "cloud-c", "update", "--new-token-key-file", str(pem), "--json", capsys=capsys)
    assert code == 0, err
    published = "0x" + public_key_bytes(load_private_key(pem)).hex()
    assert json.loads(out)["token_key"] == published and pem.stat().st_mode & 0o077 == 0
    # never overwritten; an existing key file is published as it is
    code, _, err = xcentre(world, "cloud-c", "update", "--new-token-key-file", str(pem), capsys=capsys)
    assert code == 2 and "never overwritten" in err
    code, out, _ = xcentre(world, "hpc-a", "update", "--token-key-file", str(pem), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["token_key"] == published
    record = k.c.consortium.functions.member(centre_id("hpc-a")).call()
    assert "0x" + bytes(record[4]).hex() == published


def test_list_shows_when_proposals_expire_and_a_vote_on_an_expired_one_is_refused(world, capsys):
    from ledger.governance import PROPOSAL_LIFETIME, utc
    from tests.test_contracts import advance

    k, _ = world
    code, out, _ = xcentre(world, "hpc-a", "propose", "fund", "hpc-b", "7", "--json", capsys=capsys)
    expires = json.loads(out)["proposal"]["expires_at"]
    code, out, _ = xcentre(world, "hpc-a", "propose", "quorum", "3", capsys=capsys)
    fits(out)
    assert code == 0 and "it expires " in out  # and when, as the proposer is told
    advance(k.chain, PROPOSAL_LIFETIME)
    xcentre(world, "cloud-c", "propose", "fund", "cloud-c", "9", capsys=capsys)
    code, out, _ = xcentre(world, None, "list", capsys=capsys)
    assert code == 0
    fits(out)
    text = " ".join(out.split())  # as wrapped at 80 columns
    assert f"#1 fund hpc-b with 7 credit units: expired {utc(expires)} with 1 of 2 votes (propose it again)" in text
    assert "#2 set the quorum to 3: expired " in text
    assert "#3 fund cloud-c with 9 credit units: open, 1 of 2 votes (1 more to carry it), expires " in text
    listed = json.loads(xcentre(world, None, "list", "--json", capsys=capsys)[1])["proposals"]
    assert [(p["id"], p["state"], p["expired"]) for p in listed] == [
        (1, "expired", True),
        (2, "expired", True),
        (3, "open", False),
    ]
    assert listed[0]["expires_at"] == expires
    open_ = json.loads(xcentre(world, None, "list", "--open", "--json", capsys=capsys)[1])["proposals"]
    assert [p["id"] for p in open_] == [3]
    # a vote on an expired proposal: exit 2 with the reason, nothing sent
    block = k.chain.block_number()
    code, out, err = xcentre(world, "hpc-b", "vote", "1", "--json", capsys=capsys)
    assert (code, out) == (2, "") and json.loads(err)["reasons"] == ["proposal-expired"]
    code, _, err = xcentre(world, "hpc-b", "vote", "1", capsys=capsys)
    fits(err)
    assert code == 2 and f"proposal 1 expired at {utc(expires)}" in " ".join(err.split())
    assert k.chain.block_number() == block
    assert k.c.credit.functions.balanceOf(k.accounts["hpc-b"].address).call() == 0
