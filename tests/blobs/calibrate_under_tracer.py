"""Run by test_blob_pool_calibration.py: import fl_async.blobs.buffers under a tracer that keeps the frames of calls that returned a value (as a
call recorder / snooping debugger might) and lets go of them after the import."""

import sys

import numpy as np

kept_frames = []


def tracer(frame, event, arg):
    if event == "return" and arg is not None:
        kept_frames.append(frame)
    return tracer


sys.settrace(tracer)
from fl_async.blobs import buffers  # noqa: E402  (calibration runs here, traced)

sys.settrace(None)
print("calibrated idle refs:", buffers._IDLE_REFS)
kept_frames.clear()  # the tool lets go of its frames

pool = buffers.BufferPool(max_idle_bytes=64 << 20)
v = pool.allocate(2 << 20)
a = np.frombuffer(v, dtype=np.uint8)
a[:] = 9
del v  # the application keeps `a`
w = pool.allocate(2 << 20)
np.frombuffer(w, dtype=np.uint8)[:] = 1
print("kept array intact:", bool((a == 9).all()), "| reused:", pool.statistics().reused)
