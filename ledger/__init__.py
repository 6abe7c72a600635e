"""Everything that talks to the chain: backends, bindings, deployment, Merkle batching,
record signing, netting, the anchoring outbox, the event index and audit."""
