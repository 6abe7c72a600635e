"""The demo reads well in an 80-column terminal.

Nothing is cut (URLs, user names, outputs: long words fold onto the next line),
every line fits 80 columns, amounts carry their unit (XCC), a net position says
in words which way it goes, no Python dict or list literal is printed, and the
demo ends by telling the reader what to try next.

The formatting helpers are checked directly; the whole demo runs once, as
`xcentre demo` in an 80-column terminal, for the properties of its real output.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from auth.ldap_embedded import EmbeddedLdap
from auth.ldif import centre_ldif
from gateway.demo.local import EPHEMERAL, listening_port
from gateway.demo.show import UNIT, amount, column, net, say, table, xcc
from gateway.demo.story import _show_epoch

XCENTRE = Path(sys.executable).parent / "xcentre"
WIDTH = 80
HASH = re.compile(r"0x[0-9a-fA-F]{8}…[0-9a-fA-F]{4}")  # the demo's deliberate short form of a digest
LONG_URL = "http://127.0.0.1:65535/v1/audit/epochs/12/records?from=" + "0123456789abcdef" * 4


def _rendered(draw) -> list[str]:
    console = Console(width=WIDTH, record=True, file=io.StringIO(), color_system=None)
    draw(console)
    return console.export_text().splitlines()


def _unfolded(lines: list[str]) -> str:
    """The text of `lines` with what rich folded joined again: prose line to line, table cells column by column."""
    prose = "".join(line.strip() for line in lines if not line.startswith("│"))
    rows = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    cells = ["".join(row[i].strip() for row in rows if len(row) > i) for i in range(max(map(len, rows), default=0))]
    return "\n".join([prose, *cells])


def _nothing_cut(lines: list[str], *words: str) -> None:
    """Each of `words` is there whole once what rich folded is joined again; no ellipsis but a digest's."""
    unfolded = _unfolded(lines)
    for word in words:
        assert word in unfolded, f"{word!r} was cut:\n" + "\n".join(lines)
    assert "…" not in HASH.sub("", "\n".join(lines)), "rich cut something short with an ellipsis"


# -- the helpers ---------------------------------------------------------------------------------------------


def test_amounts_are_exact_xcc_with_thousands_separators():
    assert [amount(v) for v in (0, 1, 40_000, -5_233, 1_000_000_000, 1_000_994_767)] == [
        "0",
        "0.000001",
        "0.04",
        "-0.005233",
        "1,000",
        "1,000.994767",
    ]
    assert xcc(250_000_000) == f"250 {UNIT}"
    assert xcc(1_618, signed=True) == f"+0.001618 {UNIT}"


def test_a_column_of_amounts_aligns_its_decimals():
    assert column([40_000, 25_000, 60_000]) == ["0.040", "0.025", "0.060"]
    assert column([1_000_000_000, 1_000_998_112]) == ["1,000.000000", "1,000.998112"]
    assert column([1_618, -1_888, 0], signed=True) == ["+0.001618", "-0.001888", "0.000000"]
    with pytest.raises(ValueError):
        amount(1_234, places=2)  # never rounded away


def test_a_net_position_says_which_way_it_goes():
    assert net(1_618) == "+0.001618 is owed"
    assert net(-1_888) == "-0.001888 owes"
    assert net(0) == "0 (square)"


def test_prose_wraps_under_its_mark_and_cuts_no_url():
    lines = _rendered(lambda c: say(c, f"the gateway of hpc-a at {LONG_URL} answered for alice@hpc-a", "✓"))
    assert all(cell_len(line) <= WIDTH for line in lines)
    assert lines[0].startswith("✓ ") and all(line.startswith("  ") for line in lines[1:])
    _nothing_cut(lines, LONG_URL, "alice@hpc-a")


def test_table_cells_fold_rather_than_cut():
    def draw(console: Console) -> None:
        grid = table("user", "gateway", "price", title="long cells", right=("price",))
        grid.add_row("a-user-with-a-very-long-name@a-centre-with-a-long-name", LONG_URL, "0.000001")
        console.print(grid)

    lines = _rendered(draw)
    assert all(cell_len(line) <= WIDTH for line in lines)
    _nothing_cut(lines, LONG_URL, "a-user-with-a-very-long-name@a-centre-with-a-long-name")


def test_an_epoch_shows_units_net_in_words_and_void_claims():
    view = {
        "epoch": 2,
        "anchors": {
            "ai-c": {"record_count": 5, "homes": {"hpc-a": {"total": 250_000_000, "voided": True}}},
            "cloud-b": {"record_count": 4, "homes": {"ai-c": {"total": 1_351, "voided": False}}},
            "hpc-a": {"record_count": 0, "homes": {}},
        },
        "net_positions": {"ai-c": -1_351, "cloud-b": 1_351, "hpc-a": 0},
        "disputes": [],
        "transfers": [{"from": "ai-c", "to": "cloud-b", "amount": 1_351}],
    }
    lines = _rendered(lambda c: _show_epoch(c, view, legend=True))
    text = "\n".join(lines)
    assert all(cell_len(line) <= WIDTH for line in lines), text
    assert f"in {UNIT}" in lines[0]
    assert re.search(r"│ ai-c +│ 5 +│ hpc-a: 250 void +│ +-0\.001351 owes │", text)
    assert re.search(r"│ cloud-b +│ 4 +│ ai-c: 0\.001351 +│ +\+0\.001351 is owed │", text)
    assert "0.000000 (square)" in text
    assert '"is owed" (+)' in " ".join(text.split())
    assert f"settlement: ai-c pays cloud-b 0.001351 {UNIT} from its collateral" in text


# -- the whole demo, once ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """`xcentre demo` in an 80-column terminal (about a minute and a half)."""
    env = os.environ | {"COLUMNS": str(WIDTH), "LINES": "50", "NO_COLOR": "1"}
    return subprocess.run(
        [str(XCENTRE), "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_the_demo_runs(demo):
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "NOT verified" not in demo.stdout


def test_every_line_of_the_demo_fits_80_columns(demo):
    wide = [line for line in (demo.stdout + demo.stderr).splitlines() if cell_len(line) > WIDTH]
    assert not wide, "\n".join(wide)


def test_the_demo_cuts_nothing(demo):
    lines = demo.stdout.splitlines()
    _nothing_cut(lines, "alice@hpc-a", "carol@cloud-b", "dave@ai-c", "bob@hpc-a")
    text = " ".join(demo.stdout.split())
    outputs = re.findall(r"│ (\d{12,}) +│", demo.stdout)  # each job's output, whole
    assert len(outputs) == 4 and all(len(o) >= 17 for o in outputs)
    assert re.search(r"opens the result: \d{19}\b", text)


def test_the_demo_prints_no_python_literals(demo):
    for literal in ("{'", '{"', "['", "[{", "': ", "None", "True", "False"):
        assert literal not in demo.stdout, literal


def test_the_demo_gives_units_and_the_sign_of_net_positions(demo):
    text = " ".join(demo.stdout.split())
    assert f"Amounts are in {UNIT}" in text
    assert f"Member centres and their prices in {UNIT}" in text
    assert re.search(r"price \(receipt\) +│ 0\.\d+ XCC", demo.stdout)
    assert re.search(rf"claiming 250 {UNIT}", text)
    assert re.search(rf"refunded after its deadline: [\d.]+ {UNIT}", text)
    assert re.search(r"[+]\d[\d.,]* is owed", text) and re.search(r"-\d[\d.,]* owes", text)
    assert "is paid that from the collateral" in text
    assert re.search(rf"settlement: \S+ pays \S+ [\d.]+ {UNIT} from its collateral", text)


def test_the_demo_tells_the_whole_story(demo):
    """Sign-on, policy, fair payment, a cheat voided, decisions on the record: each step as the reader sees it."""
    out = demo.stdout
    text = " ".join(out.split())  # prose lines joined again
    assert "verified against the chain" in text
    assert "students may request at most 1 hour of walltime" in text
    # fair payment: receipts, a reveal for the payer who vanished, a refund, a cheat voided
    assert len(re.findall(r"│ receipt +│", out)) == 4
    assert "hpc-a was paid by revealing k on chain, and the payer reads k at home and opens the result" in text
    assert "unused order for cloud-b was refunded after its deadline" in text
    voided = r"hpc-a disputed records? [#\d, ]+ of ai-c's claim \(no evidence shown\) → nobody could answer"
    assert re.search(voided, text)
    cheat = re.search(r"│ ai-c +│ +1,000 │ +[\d,.]+ │ +([+-][\d.]+) │", out)  # collateral, in XCC
    assert cheat and float(cheat.group(1)) < -0.9  # the cheat's anchor bond (1 XCC) went to hpc-a
    # access decisions on the record: each policy version as published, hpc-a's decision log of epoch 1 as
    # anchored, every decision in it taken again, bob's refusal among them
    published = r"│ [a-z-]+ +│ v1 +│ 0x[0-9a-f]{8}…[0-9a-f]{4} +│ ✓ the published one │"
    assert len(re.findall(published, out)) == 3
    anchored = re.search(
        r"Decision logs, epoch 1, on chain.*?│ hpc-a +│ (\d+) +│ (0x[0-9a-f]{8}…[0-9a-f]{4}) │", out, re.S
    )
    assert anchored
    entries, root = anchored.groups()
    assert f"{entries} entries, root {root} as anchored on chain" in text
    again = re.search(
        r"re-evaluated (\d+) with policy v1 in [\d.]+ s: each as logged \((\d+) allow, (\d+) deny\)", text
    )
    assert again and int(again.group(1)) == int(again.group(2)) + int(again.group(3)) == int(entries)
    assert "refused to " in text
    assert "logged deny by student-walltime; policy v1 again: deny by student-walltime" in text
    assert "Audit of hpc-a's decisions in epoch 1: verified against the chain" in text


def test_the_demo_ends_with_what_to_try_next(demo):
    closing = " ".join(demo.stdout.strip().splitlines()[-5:]).split()
    assert "Try next:" in " ".join(closing) and "`xcentre --help`" in " ".join(closing)


def test_stray_bytes_at_the_demo_directory_print_nothing(capfd):
    """Another program on loopback talking HTTP to the embedded directory's port: ldaptor would print a
    2,000-column line on the demo's stdout; the directory drops the connection instead, silently."""
    directory = EmbeddedLdap(centre_ldif("dc=stray,dc=org", [], [], service_password="pw"))
    port = int(directory.start().rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as stray:
            stray.sendall(b"GET /v1/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            assert stray.recv(100) == b""  # dropped, not left hanging
    finally:
        directory.stop()
    out, err = capfd.readouterr()
    assert "BERDecoderContext" not in out + err


def test_gateway_ports_come_from_outside_the_range_of_outgoing_connections():
    """A gateway's port is on chain seconds before it listens: no outgoing connection may take it meanwhile."""
    if not EPHEMERAL.exists():
        pytest.skip("no ip_local_port_range on this system")
    low, high = map(int, EPHEMERAL.read_text().split())
    for port in (listening_port() for _ in range(20)):
        assert not low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # and free
