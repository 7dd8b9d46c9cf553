"""OpenBLAS settings of the training processes; import before NumPy (main.py, bench.py, predict.py).

OpenBLAS keeps its worker threads spinning for a while after each BLAS call (``OPENBLAS_THREAD_
TIMEOUT``: 2**n clock cycles, n = 28 by default, about 0.1 s). A training step here alternates
NumPy's BLAS (the fully connected layers) with this project's own worker threads (``fastconv``'s
kernels, the fused optimizer update), so a spinning OpenBLAS thread takes the core the next kernel
needs. With ``n = 4`` (OpenBLAS's minimum) the workers go to sleep at once. Measured on a 2-core
AMD EPYC, nothing else running, PiczakCNN standard step, batch 64 (``bench.py``, five interleaved
pairs of 20-30 steps, the optimizer update then in NumPy ufuncs): median step 0.232-0.281 s
instead of 0.250-0.305 s, the update 0.026-0.033 s instead of 0.037-0.041 s (README "Threads").

OpenBLAS reads the variable once, when NumPy loads it: a value the user set is kept, and nothing
changes in a process that had imported NumPy before this module.
"""
import os

#: The OpenBLAS thread timeout this project's processes use unless the environment sets one.
THREAD_TIMEOUT = '4'

os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', THREAD_TIMEOUT)
