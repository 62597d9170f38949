"""LAVA's job form (``protocols: lava-multinode``, ``device_group``) translated to multi jobs."""
