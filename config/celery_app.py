"""The Celery application object, configured from settings when first used.

The configuration is a promise (``add_defaults`` with a callable): it is read
from the environment at first use, not at import, so ``convoy run`` can
start its private Redis and point the app at it after importing convoy.
Task modules register on this app; the coordinator builds signatures by
task name, so submitting a job never imports task code.
"""
from __future__ import annotations

from celery import Celery

from convoy.config.celery_config import celery_config
from convoy.config.settings import load_settings


def make_app() -> Celery:
    celery_app = Celery("convoy", set_as_current=False)
    celery_app.add_defaults(lambda: celery_config(load_settings()))
    return celery_app


app = make_app()
