"""`ttsd bench` commands (placeholder until its owner lands it)."""
