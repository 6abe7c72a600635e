"""A centre's node: job service, executors, metering, local store."""
