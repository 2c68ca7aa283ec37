# SPDX-License-Identifier: Apache-2.0
"""os.fork() inside the pytest process, for the fork tests."""
import gc
import os

__all__ = ["fork"]


def fork():
    """os.fork(), the parent's garbage collected first and the child never collecting.

    Earlier tests leave garbage behind (grpc channels and servers among it) whose
    finalizers join threads; collected in a child, where those threads do not exist,
    they would hang it.  The child of a test only checks the tracer and exits.
    """
    gc.collect()
    pid = os.fork()
    if pid == 0:
        gc.disable()
    return pid
