"""Measuring primitives: the one timing loop, device handling, out-of-memory backoff, cost (GFLOPs, tokens)
and compiled modules. Nothing here knows about sweeps or rows."""
