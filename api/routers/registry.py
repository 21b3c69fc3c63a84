"""Placeholder: filled in by its own work item."""

from fastapi import APIRouter

router = APIRouter()
