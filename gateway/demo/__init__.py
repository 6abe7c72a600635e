"""A whole consortium on one machine (the demo and the integration tests) and the demo's story."""
