"""NumPy 2 compatibility for Chainer 7.8.1.

Chainer 7.8.1 reads ``numpy.sctypes`` at import time; NumPy 2.0 removed it. Everything else
Chainer uses (training, Trainer extensions, serializers, MultiprocessIterator) works on NumPy 2.x.
This module restores ``numpy.sctypes`` with the same content NumPy 1.26 had, and must be imported
before ``chainer``. On NumPy 1.x it changes nothing.

Every module of this project that imports Chainer does ``import compat`` first.
"""
import numpy as np

__all__ = ['SCTYPES']

SCTYPES = {
    'int': [np.int8, np.int16, np.int32, np.int64],
    'uint': [np.uint8, np.uint16, np.uint32, np.uint64],
    'float': [np.float16, np.float32, np.float64, np.longdouble],
    'complex': [np.complex64, np.complex128, np.clongdouble],
    'others': [bool, object, bytes, str, np.void],
}

try:
    np.sctypes  # noqa: B018  (NumPy 1.x: present, leave it alone)
except AttributeError:
    np.sctypes = SCTYPES
