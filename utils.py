"""Shared helpers: the user-error type, atomic file writes, and the per-clip preprocessing of
SPEC 3 (Tokozume et al. 2018, section 4 / the BC-learning reference's ``utils.py``).

Preprocessing functions take and return 1-D NumPy arrays of one clip (samples). Randomness comes
from an explicit ``numpy.random.Generator`` so that runs are reproducible from ``--seed``.
"""
import json
import os
import tempfile

import numpy as np


class UserError(Exception):
    """A mistake in the user's input (a flag, a path, a data file).

    Entry points catch it, print ``<program>: error: <message>`` on one line to stderr and exit
    with status 2, without a traceback. The message names the flag or file at fault.
    """


def atomic_write(path, write_fn, suffix=''):
    """Write a file so that ``path`` is either absent/unchanged or complete, never truncated.

    ``write_fn(tmp_path)`` writes the content to a temporary name in the same directory, which is
    then renamed over ``path`` (``os.replace``, atomic on POSIX). On any exception the temporary
    file is removed and the exception re-raised. ``suffix`` is appended to the temporary name
    (``np.savez`` needs a name ending in ``.npz``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp' + suffix,
                               dir=directory)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write('\n')
    atomic_write(path, write)
