"""Device workers started from an agent file, the embedded Redis, heartbeats."""
