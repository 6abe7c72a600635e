"""Building blocks every package shares, in one place each: centre names, hex and
bytes32, canonical JSON, JSON from another party read within bounds, private files.

Standard library only (and `ledger/__init__` imports nothing), so `auth`, `ledger`
and `gateway` all import it without breaking the import rules (auth never imports
web3, ledger never imports FastAPI or the directory code); it imports none of them.
"""
