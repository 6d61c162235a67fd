"""The product's logging: secrets and tokens redacted, httpcore's raw header traces never shown."""

import logging

from guestfs_mount.logsetup import RedactingFilter, setup_logging


def test_redacting_filter_blanks_secrets_and_tokens():
    record = logging.LogRecord("x", logging.INFO, __file__, 1,
                               "GET https://esx/guestFile?id=7&token=52be17e0-aa&x=1 pw=%s sid vmware-api-session-id: abc123",
                               ("hunter2",), None)
    RedactingFilter(lambda: ["hunter2"]).filter(record)
    text = record.getMessage()
    assert "hunter2" not in text and "52be17e0" not in text and "abc123" not in text
    assert "token=***" in text and "id=7" in text


def test_debug_logging_never_shows_httpcore_traces():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(debug=True)
    try:
        assert not logging.getLogger("httpcore").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
        setup_logging(debug=False)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
