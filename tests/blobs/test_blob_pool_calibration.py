"""buffers._calibrate must never settle on an 'idle' reference count that a buffer with a live view can
have: a tracer active during the import that keeps the frames of returning calls (as a call recorder or a
snooping debugger might) and lets go of them later must not make a buffer with one live view look idle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("calibrate_under_tracer.py")
ROOT = Path(__file__).resolve().parents[2]


def test_calibration_under_a_frame_keeping_tracer() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    assert "kept array intact: True" in out, out
