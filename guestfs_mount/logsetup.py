"""Logging: one line per event, secrets redacted, journald-friendly.

Under systemd (JOURNAL_STREAM set) each line is prefixed with its syslog priority (`<3>...`) and carries no
timestamp, because journald adds both. Every record passes through `RedactingFilter`, which blanks the config's
resolved secrets and any transfer-URL or session token, as a last line of defence behind code that never logs them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Callable, Iterable

_TOKEN = re.compile(r"(token=|vmware-api-session-id['\"]?[:=]\s*['\"]?)[^&\s'\"]+", re.IGNORECASE)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Callable[[], Iterable[str]]):
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN.sub(r"\1***", message)
        for secret in self._secrets():
            if secret:
                redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(debug: bool, secrets: Callable[[], Iterable[str]] = tuple) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # httpx logs every request line at INFO (transfer tokens are redacted above): only when debugging.
    # httpcore's DEBUG traces print raw headers, session ids included, in a shape no filter can rely on: never.
    logging.getLogger("httpx").setLevel(logging.INFO if debug else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
