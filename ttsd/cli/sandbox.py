"""`ttsd sandbox` commands (placeholder until its owner lands it)."""
