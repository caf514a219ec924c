"""`ttsd models` commands (placeholder until its owner lands it)."""
