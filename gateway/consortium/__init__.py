"""A whole consortium on one machine, as separate processes: `xcentre consortium up|status|down`.

From one file (examples/consortium.toml) it starts one anvil on loopback, deploys the
contracts, funds every centre's chain account with gas, starts one slapd per centre
loaded from the centre's LDIF and one `xcentre gateway` process per centre with its
own data directory; a state file records every process so `status` and `down` find
them. The tests' fixtures start anvil and slapd with the same code.
"""
