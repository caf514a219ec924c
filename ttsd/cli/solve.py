"""`ttsd solve` commands (placeholder until its owner lands it)."""
