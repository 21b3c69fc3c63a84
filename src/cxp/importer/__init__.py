"""History import (`cxp import`, `POST /v1/imports`): JSON lines, CSV and Parquet telemetry through the gateway's
contract validation, (device, seq) dedupe and dead letters, resumable from a per-file checkpoint."""

from cxp.importer.errors import HistoryImportError, ImportBusy, ImportFileError
from cxp.importer.readers import COLUMNS, FORMATS, check_file, detect_format
from cxp.importer.run import ImportResult, import_file

__all__ = [
    "COLUMNS",
    "FORMATS",
    "HistoryImportError",
    "ImportBusy",
    "ImportFileError",
    "ImportResult",
    "detect_format",
    "import_file",
    "check_file",
]
