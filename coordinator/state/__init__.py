"""Shared state in Redis: key names, the job store, the device registry and leases, control signals, connections."""
