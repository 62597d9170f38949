"""Settings, the Celery configuration and the cerberus schemas."""
