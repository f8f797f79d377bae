"""``fl_async.common.log``: Flower's ``log(level, msg, *args)``, visible at INFO without logging setup."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, logging, sys
    from logging import DEBUG, INFO, WARNING
    from fl_async.common import log
    import fl_async.common.logger as logger_module

    log(INFO, "round %d of %s", 1, "three")
    log(DEBUG, "debug is hidden by default")
    logging.getLogger("fl_async.superlink").info("library INFO logs stay quiet")
    importlib.reload(logger_module)  # importing again installs no second handler
    log(WARNING, "printed once")
    assert logging.getLogger().handlers == [], "the root logger is left alone"
    assert len(logging.getLogger("fl_async").handlers) == 1
    logging.basicConfig(level=logging.WARNING, format="app: %(levelname)s %(message)s", stream=sys.stderr)
    log(INFO, "through the application's handler only")
    """
)


def test_log_prints_info_once_on_stderr_without_setup() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "INFO : round 1 of three",
        "WARNING : printed once",
        "app: INFO through the application's handler only",
    ], proc.stderr
