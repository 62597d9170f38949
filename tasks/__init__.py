"""The Celery tasks: device job phases and the parent job's collect / reserve / test / cleanup."""
