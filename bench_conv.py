"""Micro-benchmark: stock ``F.convolution_2d`` vs ``fastconv`` on each conv layer of EnvNet and
EnvNet-v2 alone (README, "Speed"). Whole training steps, stock against fast: ``bench.py --compare``.

    .venv/bin/python bench_conv.py [--batch 8] [--repeat 3] [--nets envnet,envnetv2]
                                   [--out FILE] [--fast-threads N]

Prints one JSON object:

* ``layers``: for each conv layer, ``stock``/``fast`` dicts with ``fwd_s`` (forward, no graph),
  ``fwdbwd_s`` (forward + backward of x, W -- x only where the layer's input needs a gradient in
  the network), each the minimum over ``--repeat`` interleaved runs of wall-clock time, the same
  for process CPU time (``*_cpu_s``), and ``peak_rss_mb``: the peak rise of the resident set
  during one forward + backward (sampled every 2 ms by a thread: BLAS buffers included);
  ``speedup_fwd`` / ``speedup_fwdbwd`` are stock/fast wall-time ratios.

Timings on a shared machine are noisy: the minimum over repeats is reported, and the load average
is included. Threads: OpenBLAS as configured (``OPENBLAS_NUM_THREADS``) for Chainer; fastconv uses
``fastconv.NUM_THREADS`` workers (``--fast-threads``) with single-threaded BLAS inside its kernels.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F

import fastconv
from bench import PeakRSS

# name: (C, H, W, O, kh, kw, stride, pad, needs_gx)
LAYERS = {
    'envnet': [
        ('conv1', (1, 1, 24014, 40, 1, 8, (1, 1), (0, 0), False)),
        ('conv2', (40, 1, 24007, 40, 1, 8, (1, 1), (0, 0), True)),
        ('conv3', (1, 40, 150, 50, 8, 13, (1, 1), (0, 0), True)),
        ('conv4', (50, 11, 46, 50, 1, 5, (1, 1), (0, 0), True)),
    ],
    'envnetv2': [
        ('conv1', (1, 1, 66650, 32, 1, 64, (1, 2), (0, 0), False)),
        ('conv2', (32, 1, 33294, 64, 1, 16, (1, 2), (0, 0), True)),
        ('conv3', (1, 64, 260, 32, 8, 8, (1, 1), (0, 0), True)),
        ('conv4', (32, 57, 253, 32, 8, 8, (1, 1), (0, 0), True)),
        ('conv5', (32, 10, 82, 64, 1, 4, (1, 1), (0, 0), True)),
        ('conv6', (64, 10, 79, 64, 1, 4, (1, 1), (0, 0), True)),
        ('conv7', (64, 10, 38, 128, 1, 2, (1, 1), (0, 0), True)),
        ('conv8', (128, 10, 37, 128, 1, 2, (1, 1), (0, 0), True)),
        ('conv9', (128, 10, 18, 256, 1, 2, (1, 1), (0, 0), True)),
        ('conv10', (256, 10, 17, 256, 1, 2, (1, 1), (0, 0), True)),
    ],
}


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_layer(spec, batch, repeat, rng):
    c, h, w, o, kh, kw, stride, pad, needs_gx = spec
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    W = (rng.standard_normal((o, c, kh, kw)) * np.sqrt(2.0 / (c * kh * kw))).astype(np.float32)
    convs = {'stock': F.convolution_2d, 'fast': fastconv.fast_convolution_2d}

    def fwd(fn):
        with chainer.no_backprop_mode():
            fn(x, W, None, stride, pad)

    def fwdbwd(fn):
        xv = chainer.Variable(x, requires_grad=needs_gx)
        wv = chainer.Variable(W)
        y = fn(xv, wv, None, stride, pad)
        y.grad = np.ones(y.shape, np.float32)
        y.backward()

    res = {k: {'fwd_s': 1e9, 'fwdbwd_s': 1e9, 'fwd_cpu_s': 1e9, 'fwdbwd_cpu_s': 1e9}
           for k in convs}
    for _ in range(repeat):
        for name, fn in convs.items():
            r = res[name]
            wall, cpu = _timed(lambda: fwd(fn))
            r['fwd_s'], r['fwd_cpu_s'] = min(r['fwd_s'], wall), min(r['fwd_cpu_s'], cpu)
            wall, cpu = _timed(lambda: fwdbwd(fn))
            r['fwdbwd_s'], r['fwdbwd_cpu_s'] = min(r['fwdbwd_s'], wall), min(r['fwdbwd_cpu_s'], cpu)
    for name, fn in convs.items():
        with PeakRSS() as m:
            fwdbwd(fn)
        res[name]['peak_rss_mb'] = m.peak_mb
        res[name] = {k: (round(v, 4) if isinstance(v, float) else v)
                     for k, v in res[name].items()}
    out = {'input': [batch, c, h, w], 'W': [o, c, kh, kw], 'stride': list(stride),
           'pad': list(pad), 'gx': needs_gx, **res}
    out['speedup_fwd'] = round(res['stock']['fwd_s'] / res['fast']['fwd_s'], 2)
    out['speedup_fwdbwd'] = round(res['stock']['fwdbwd_s'] / res['fast']['fwdbwd_s'], 2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--nets', default='envnet,envnetv2')
    p.add_argument('--out', default=None, help='also write the JSON here')
    p.add_argument('--fast-threads', type=int, default=None,
                   help='fastconv.NUM_THREADS (default: automatic)')
    a = p.parse_args(argv)
    if a.fast_threads is not None:
        fastconv.NUM_THREADS = a.fast_threads
    rng = np.random.default_rng(0)
    nets = [n for n in a.nets.split(',') if n]
    result = {'batch': a.batch, 'repeat': a.repeat, 'numpy': np.__version__,
              'chainer': chainer.__version__, 'cpus': os.cpu_count(),
              'col_buffer_bytes': fastconv.COL_BUFFER_BYTES,
              'openblas_num_threads': os.environ.get('OPENBLAS_NUM_THREADS'),
              'fastconv_threads': fastconv._threads(),
              'loadavg_start': list(os.getloadavg())}
    result['layers'] = {net: {name: bench_layer(spec, a.batch, a.repeat, rng)
                              for name, spec in LAYERS[net]}
                        for net in nets}
    result['loadavg_end'] = list(os.getloadavg())
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, 'w') as f:
            f.write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
