"""Emulated devices: real SSH servers on loopback addresses."""
