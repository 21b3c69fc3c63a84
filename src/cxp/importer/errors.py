"""The importer's exceptions: one root, mapped at the CLI and API boundaries."""

from __future__ import annotations


class HistoryImportError(Exception):
    """Root of every importer error."""


class ImportFileError(HistoryImportError):
    """The file cannot be imported as a whole (unknown format, missing columns, not Parquet…)."""


class ImportBusy(HistoryImportError):
    """Another process is importing the same file right now."""
