"""convoy server: the HTTP front door (see app.py)."""
