"""NesterovAG with weight decay in one pass over each parameter (docs/method.md §6).

The update is Chainer's ``NesterovAG`` with its ``WeightDecay`` optimizer hook, operation for
operation (so the result is bit-identical on the CPU):

    g <- g + rate * p;   v <- momentum * v - lr * g
    p <- p + momentum**2 * v - (1 + momentum) * lr * g

Chainer runs the hook and the rule as separate whole-array NumPy expressions: about ten passes
over memory with temporaries the size of the parameter (PiczakCNN's 5000 x 5000 layer: 100 MB
each). :class:`FusedNesterovAG` runs the same expressions on cache-sized chunks (no full-size
temporary; parameter and velocity read and written once from main memory, the gradient
only read: the decayed gradient stays in a scratch buffer), the chunks shared out to the
worker threads of :mod:`fastconv` (NumPy releases the GIL in its ufuncs). The updater still
scans every parameter and velocity for NaN after the update (``checkpoint.non_finite_arrays``),
which also catches values changed outside the update. On a GPU it runs Chainer's own kernels
(the hook's, then the rule's).
"""
import numpy as np

import compat  # noqa: F401
from chainer import optimizer as chainer_optimizer
from chainer.backends import cuda
from chainer.optimizers import nesterov_ag

import fastconv

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

