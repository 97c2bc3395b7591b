"""multa: multi-task ML traffic analysis for the Zeek network monitor (MulTA's LMMoE)."""

__version__ = "0.1.0"
