"""ttsd: test-time self-distillation (SDPO) for one hard coding problem at a time."""

__version__ = "0.1.0"
