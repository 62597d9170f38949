"""Placeholder: filled in by issue 14's testflinger front."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
