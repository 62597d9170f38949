"""Device connectors behind one small interface, and their registry."""
