"""Import TensorFlow without its start-up chatter.

TensorFlow 2.2x prints oneDNN/CUDA notes from C++ before absl logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` cannot hide them (tensorflow/tensorflow#100442), and on a machine without a GPU
the first device query logs a ``cuInit`` error. A user sees a wall of alarming lines before kit's first
word. We send file descriptor 2 to a temporary file while TensorFlow loads and probes its devices, and
replay that file if the import fails, so nothing that explains a real failure is lost.
``KIT_TF_LOGS=1`` keeps TensorFlow's own output.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Redirect the process's fd 2 (C/C++ writes too) to a temp file; replay it on an exception."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> None:
    """Load TensorFlow and list its devices quietly (a no-op once loaded, or with KIT_TF_LOGS=1)."""
    if "tensorflow" in sys.modules or os.environ.get("KIT_TF_LOGS"):
        return
    with native_stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
