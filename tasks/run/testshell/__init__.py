"""LAVA's test shell on the device: the overlay (``overlay.py``), the POSIX-sh helpers copied with it
(``helpers/``), the marker lines they print (``markers.py``), the SSH session that runs a test action and
relays its MultiNode calls (``session.py``) and the whole of a job's test actions (``runner.py``)."""
