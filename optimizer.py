"""NesterovAG with weight decay in one pass over each parameter (docs/method.md §6).

The update is Chainer's ``NesterovAG`` with its ``WeightDecay`` optimizer hook, operation for
operation (so the result is bit-identical on the CPU):

    g <- g + rate * p;   v <- momentum * v - lr * g
    p <- p + momentum**2 * v - (1 + momentum) * lr * g

Chainer runs the hook and the rule as separate whole-array NumPy expressions: about ten passes
over memory with temporaries the size of the parameter (PiczakCNN's 5000 x 5000 layer: 100 MB
each). :class:`FusedNesterovAG` reads the parameter, its gradient and velocity once and writes
the parameter and velocity once, in chunks shared out to the worker threads of :mod:`fastconv`:

- ``KERNEL == 'numba'`` (where numba imports; requirements.txt installs it): one loop compiled
  by numba per chunk, each element's operations in the order above, float32 scalars for a float32
  parameter (as NumPy casts Python floats), no fused multiply-add (numba's default, no fastmath),
  the GIL released. float32 and float64 parameters; other dtypes take the NumPy path.
- ``KERNEL == 'numpy'``: the same expressions as NumPy ufuncs on cache-sized chunks (the decayed
  gradient in a scratch buffer, never written back to the gradient); about three times slower
  than the compiled loop (~19 ms against ~6 ms for 25 M float32 parameters on two cores).

The updater still scans every parameter and velocity for NaN after the update
(``checkpoint.non_finite_arrays``), which also catches values changed outside the update. On a
GPU it runs Chainer's own kernels (the hook's, then the rule's).
"""
import numpy as np

import compat  # noqa: F401
from chainer import optimizer as chainer_optimizer
from chainer.backends import cuda
from chainer.optimizers import nesterov_ag

import fastconv

try:
    import numba
except ImportError:  # the NumPy path does the same update, slower
    numba = None

#: Which loop :class:`FusedNesterovAGRule` runs on the CPU: 'numba' where numba imports, else
#: 'numpy' (module docstring). Both give Chainer's values bit for bit.
KERNEL = 'numba' if numba is not None else 'numpy'

#: Elements per chunk (float32: 1 MiB per array; three arrays and two scratch buffers stay in L3
#: between the operations; smaller chunks cost more in per-call overhead than they gain in cache).
CHUNK = 1 << 18


def _nesterov_chunk(p, g, v, tmp, dg, lr, momentum, rate):
    """Chainer's WeightDecay hook then NesterovAG rule on one chunk, in place on ``p`` and ``v``.

    The decayed gradient goes to the scratch ``dg`` instead of back into ``g`` (the same
    operations, so the same values; ``g`` is not read again before the next backward pass
    replaces it), which saves writing the gradient back to memory."""
    np.multiply(p, rate, out=dg)
    np.add(g, dg, out=dg)                     # WeightDecay: g + rate * p
    v *= momentum                             # v *= momentum
    np.multiply(dg, lr, out=tmp)
    v -= tmp                                  # v -= lr * grad
    np.multiply(v, momentum * momentum, out=tmp)
    p += tmp                                  # param += momentum * momentum * v
    np.multiply(dg, (1 + momentum) * lr, out=tmp)
    p -= tmp                                  # param -= (1 + momentum) * lr * grad


if numba is not None:
    @fastconv.njit_cached
    def _nesterov_loop(p, g, v, lr, momentum, rate, momentum2, step):
        """The expressions of :func:`_nesterov_chunk` per element, in place on 1-D ``p`` and
        ``v``; the scalars have the parameter's dtype (``momentum2 = momentum**2``,
        ``step = (1 + momentum) * lr``, each computed in Python floats and then cast, as NumPy
        casts them in Chainer's expressions)."""
        for i in range(p.shape[0]):
            dg = g[i] + p[i] * rate
            vi = v[i] * momentum - dg * lr
            v[i] = vi
            p[i] = (p[i] + vi * momentum2) - dg * step


class FusedNesterovAGRule(nesterov_ag.NesterovAGRule):
    """:class:`chainer.optimizers.NesterovAGRule` with the weight decay hook fused in.

    Hyperparameters: ``lr``, ``momentum`` and ``weight_decay_rate`` (the ``WeightDecay`` rate)."""

    def update_core_cpu(self, param):
        grad = param.grad
        if grad is None:
            return
        p, v = param.data, self.state['v']
        lr, momentum = self.hyperparam.lr, self.hyperparam.momentum
        rate = self.hyperparam.weight_decay_rate
        if param._loss_scale is not None:
            rate *= param._loss_scale
        if not (p.flags.c_contiguous and grad.flags.c_contiguous and v.flags.c_contiguous):
            grad += rate * p
            return super().update_core_cpu(param)
        p, g, v = p.reshape(-1), grad.reshape(-1), v.reshape(-1)
        n = p.size
        starts = list(range(0, n, CHUNK))
        threads = max(1, min(fastconv._threads(), len(starts)))

        if KERNEL == 'numba' and p.dtype in (np.float32, np.float64):
            t = p.dtype.type
            scalars = (t(lr), t(momentum), t(rate), t(momentum * momentum),
                       t((1 + momentum) * lr))

            def work(w):
                for a in starts[w::threads]:
                    _nesterov_loop(p[a:a + CHUNK], g[a:a + CHUNK], v[a:a + CHUNK], *scalars)
        else:
            def work(w):
                tmp, dg = np.empty((2, min(n, CHUNK)), p.dtype)
                for a in starts[w::threads]:
                    m = min(CHUNK, n - a)
                    _nesterov_chunk(p[a:a + m], g[a:a + m], v[a:a + m], tmp[:m], dg[:m],
                                    lr, momentum, rate)
        if threads == 1:
            work(0)
        else:
            list(fastconv._executor(threads).map(work, range(threads)))

    def update_core_gpu(self, param):
        p, g = param.data, param.grad
        if p is not None and g is not None:
            rate = self.hyperparam.weight_decay_rate
            if param._loss_scale is not None:
                rate *= param._loss_scale
            cuda.elementwise('T p, T decay', 'T g', 'g += decay * p', 'weight_decay')(p, rate, g)
        super().update_core_gpu(param)


class FusedNesterovAG(nesterov_ag.NesterovAG):
    """``NesterovAG(lr, momentum)`` plus ``WeightDecay(weight_decay_rate)``, fused per parameter
    (module docstring). Snapshots hold the same entries as the stock pair's (``t``, ``epoch``
    and each parameter's velocity ``v``), so either loads the other's."""

    def __init__(self, lr=nesterov_ag._default_hyperparam.lr,
                 momentum=nesterov_ag._default_hyperparam.momentum, weight_decay_rate=0.0):
        super().__init__(lr=lr, momentum=momentum)
        self.hyperparam.weight_decay_rate = float(weight_decay_rate)

    weight_decay_rate = chainer_optimizer.HyperparameterProxy('weight_decay_rate')

    def create_update_rule(self):
        return FusedNesterovAGRule(self.hyperparam)

