"""Pure domain rules: validation, partitioning, applying writes, job state (see README.md)."""
