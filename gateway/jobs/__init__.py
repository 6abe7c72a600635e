"""Where and how jobs run: placement, pricing at the job's limits, the sandboxed executors (local, Slurm)."""
