"""The pure allocator: plain data in (waiting jobs, devices), assignments out; no I/O."""
