"""`ttsd check` commands (placeholder until its owner lands it)."""
