"""Emulated devices: real SSH servers, each a sandboxed machine of its own where the platform allows."""
