"""glibc's allocator for the training processes: keep freed memory for the next step
(main.py, bench.py, predict.py import this before NumPy; README "Memory allocator").

A training step allocates and frees the same large arrays every time (EnvNet-v2 at batch 64:
feature maps and their gradients of up to 272 MB each, a few GB in all). glibc serves every
allocation above ``M_MMAP_THRESHOLD`` (at most 32 MiB) with a fresh ``mmap`` and returns it with
``munmap`` when freed, so each step page-faults all of that memory in again and the kernel zeroes
it: on the 2-core AMD EPYC the EnvNet-v2 step spent about 8 s of every 50 s of a short bench.py
run in the kernel. :func:`keep_freed_memory` turns ``mmap`` off for allocations
(``M_MMAP_MAX = 0``: everything comes from the heap) and keeps up to 2 GiB of free memory at the
heap's top instead of returning it (``M_TRIM_THRESHOLD``): the next step reuses the pages it
already has. Measured there (``bench.py --netType envnetv2 --learning standard --batchSize 64``,
real ESC-10, two 1-thread runs beside it, runs interleaved): median step 8.4-8.7 s -> 7.0-7.4 s,
peak RSS 3.9 -> 4.5 GB. Memory is then returned to the system when the process ends rather than
when arrays are freed.

Nothing is changed when the environment configures glibc's allocator itself (``MALLOC_*_``
variables or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``), when ``INTERMIX_SYSTEM_MALLOC=1``
is set, or where the C library is not glibc (macOS, musl): :func:`keep_freed_memory` then returns
False. It decides where memory comes from, not what is computed: the same seed gives the same
``model.npz`` either way.
"""
import ctypes
import ctypes.util
import os

#: Environment variable: ``INTERMIX_SYSTEM_MALLOC=1`` leaves glibc's allocator as configured.
SYSTEM_MALLOC_ENV = 'INTERMIX_SYSTEM_MALLOC'

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4

#: Free memory kept at the heap's top (bytes; mallopt takes a C int).
TRIM_THRESHOLD = 2 ** 31 - 1

_GLIBC_VARIABLES = ('MALLOC_MMAP_MAX_', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
                    'MALLOC_TOP_PAD_', 'MALLOC_ARENA_MAX')


def _user_configured():
    """True when the environment already says how glibc's allocator should behave."""
    if os.environ.get(SYSTEM_MALLOC_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on'):
        return True
    if any(os.environ.get(name) for name in _GLIBC_VARIABLES):
        return True
    return 'glibc.malloc' in os.environ.get('GLIBC_TUNABLES', '')


def keep_freed_memory():
    """Serve large allocations from the heap and keep freed memory in the process (module
    docstring). Returns True when glibc accepted both settings, False when nothing was changed
    (the environment configures the allocator, ``INTERMIX_SYSTEM_MALLOC=1``, or no glibc)."""
    if _user_configured():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only (musl also has a mallopt that does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))


#: Whether this process keeps freed memory (set once, at import).
ACTIVE = keep_freed_memory()
