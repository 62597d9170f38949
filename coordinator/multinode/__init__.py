"""LAVA MultiNode API on Redis: message store, barriers and the lava-* commands."""
