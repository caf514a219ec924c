"""`ttsd problems` commands (placeholder until its owner lands it)."""
