"""A centre's node: the flow of one job, its wiring from a configuration, sign-on, and what it asks its peers."""
