"""The Celery-free, host-side machinery of a job's phases: scripts, output, environment, SSH, keys, reserve, guests."""
