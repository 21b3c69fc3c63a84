"""Process-wide logging set-up."""

import logging
import time


def configure_logging(level: str = "INFO") -> None:
    """One line per record, UTC timestamps."""
    logging.Formatter.converter = time.gmtime
    logging.basicConfig(level=level.upper(), format="%(asctime)sZ %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S", force=True)
