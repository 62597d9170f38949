"""The embedded default: a private Redis and a whole cluster on this machine (``convoy run``, tests, benchmarks)."""
