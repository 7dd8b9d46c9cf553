"""Throughput and memory of one training configuration, whole and by part (README, "Speed").

    .venv/bin/python bench.py --netType envnetv2 --learning intermix [--gpu -1] [--steps 5] [--warmupSteps 1]
                     [--compare] [--data DIR --dataset esc10] [--out FILE] [main.py options ...]

Every option of ``main.py`` that shapes a training step has its meaning here (``--learning``,
``--eligible``, ``--combination``, ``--mixup_type``, ``--gainSource``, ``--batchSize``,
``--strongAugment``, ``--nWorkers``, ``--nCrops``, ``--testBatchSize``, ``--stockConv``, ``--gpu``,
``--seed``). The training step is ``training.MixingUpdater``'s, on the model, optimizer and
iterators that ``main.py`` builds (``training.setup_split``). Data: the training folds of split 1
of ``--data`` (a folder made by ``esc_gen.py``), or without ``--data`` ``--clips`` synthetic 5 s
clips (noise bursts; throughput does not depend on the content).

Prints one JSON object on stdout (progress goes to stderr); ``--out`` also writes it to a file.

* ``train``: after ``--warmupSteps`` steps, ``--steps`` timed steps. ``clips_per_s`` (median, min, max,
  p25, p75 over steps): waveforms through the network per second (a mixing batch of B pairs is 2B
  clips, ``[x_i; x_j]``, see ``training.MixingUpdater``; standard learning B clips). ``parts_s``:
  the median seconds per step of each part, exclusive of nested parts -- ``data`` (iterator and
  converter), ``mixing`` (phase shift, A-weighted gains, the mixer at its point: forward only),
  ``forward`` (the network without mixing), ``loss``, ``backward``, ``update`` (optimizer with
  weight decay), ``other``; ``mixing_share`` is mixing time / step time over all timed steps.
  ``peak_rss_rise_mb``: the largest rise of the resident set within a step above its start (a
  thread samples it every 2 ms). On a GPU every part boundary synchronises the device (the parts
  then sum to the step), and ``gpu_pool_peak_mb`` is CuPy's memory-pool peak.
* ``test``: the 10-crop test over ``--testBatches`` batches of ``--testBatchSize`` clips (after one
  warm-up batch): ``crops_per_s`` and ``clips_per_s``.
* ``iterator``: the training iterator alone, no model: clips/s with ``--nWorkers`` 0 (in-process)
  and N worker processes (N = ``--nWorkers`` if above 0, else 2), over ``--iterBatches`` batches
  after two warm-up batches; ``ratio_to_train`` = the workers' clips/s over the train clips/s.
* ``profile`` (with ``--profileSteps N``): N more steps under :class:`LayerProfile`, per
  conversion path: milliseconds per step and calls per step of every Chainer function's forward
  and backward, exclusive of the functions it calls, slowest first (the optimizer update, data
  and the mixer's NumPy work are not Chainer functions: ``parts_s`` has them).
* ``loop``: the whole training loop, as a user runs it: ``main.py`` itself (a child process, its
  epoch lines on stderr) on split 1 for ``--loopEpochs`` epochs with one test, at the end, in a
  temporary ``--save`` folder (snapshots, logs and plots included; synthetic clips are written as a
  temporary 5-fold data file first). ``epochs_per_min`` of that run's training loop (its
  ``seconds_this_run``) beside ``step_only_epochs_per_min`` (the median step time x steps per
  epoch, nothing else); ``predicted_s`` = step time x steps + the full 10-crop test at the timed
  test rate, and ``ratio_to_predicted`` = loop seconds / predicted_s (1.0: the loop costs no more
  than its steps and its test); ``peak_rss_mb`` the child's peak RSS. ``--loopEpochs 0`` skips it.
* ``process``: peak RSS of this process (``ru_maxrss``; the loop's child not included), load
  averages, versions, threads.
* ``--compare`` (CPU only): the stock Chainer convolution and the fast NumPy one (``fastconv``)
  on two copies of the same model and data, steps interleaved (stock, fast, stock, ...), so that
  the machine's load hits both alike; ``train``/``test`` hold both, ``speedup`` the ratios of the
  median train clips/s and of the test crops/s, ``rss_ratio`` fast/stock peak rise.

Exit status 2 with one line for bad options or data.
"""
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time

import blasenv  # noqa: F401  (before NumPy: OpenBLAS thread timeout)
import allocator  # noqa: F401  (glibc keeps freed memory for the next step)
import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F

import dataset
import distributed
import evaluation
import fastconv
import intermix
import learning
import opts
import runtime
import training
import utils
from utils import UserError

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))

PROG = 'bench.py'


def _rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakRSS:
    """Context manager: ``self.peak_mb`` = peak rise of the resident set (MB) over the block,
    sampled every 2 ms by a thread (so BLAS and allocator buffers count)."""

    def __enter__(self):
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.peak_mb = round((self.peak - self.base) / 2 ** 20, 1)
        return False


class LayerProfile(chainer.FunctionHook):
    """A Chainer function hook that times every function's forward and backward, exclusive of
    the functions it calls (a backward that applies other functions, as ``LinearFunction``'s
    does, is charged only its own time). ``summary(steps)``: {'NAME (forward|backward)':
    {'ms_per_step', 'calls_per_step'}}, slowest first. On a GPU it synchronises the device."""

    name = 'LayerProfile'

    def __init__(self, sync=None, clock=time.perf_counter):
        self.sync, self.clock = sync, clock
        self.stack, self.totals, self.calls = [], {}, {}

    def _pre(self):
        if self.sync:
            self.sync()
        self.stack.append([self.clock(), 0.0])

    def _post(self, function, kind):
        if self.sync:
            self.sync()
        start, children = self.stack.pop()
        elapsed = self.clock() - start
        if self.stack:
            self.stack[-1][1] += elapsed
        key = f'{function.label} ({kind})'
        self.totals[key] = self.totals.get(key, 0.0) + elapsed - children
        self.calls[key] = self.calls.get(key, 0) + 1

    def forward_preprocess(self, function, in_data):
        self._pre()

    def forward_postprocess(self, function, in_data):
        self._post(function, 'forward')

    def backward_preprocess(self, function, in_data, out_grad):
        self._pre()

    def backward_postprocess(self, function, in_data, out_grad):
        self._post(function, 'backward')

    def summary(self, steps):
        """Per-step milliseconds and calls of each function and pass, slowest first."""
        order = sorted(self.totals, key=self.totals.get, reverse=True)
        return {k: {'ms_per_step': round(1000 * self.totals[k] / steps, 2),
                    'calls_per_step': round(self.calls[k] / steps, 2)} for k in order}


class PartTimer:
    """Exclusive wall time per named part: a part nested in another is subtracted from it.

    ``sync`` (a callable or None) runs at every boundary: on a GPU it waits for the device, so
    that asynchronous kernels are charged to the part that launched them. ``clock``: seconds.
    ``totals`` maps each part to its exclusive seconds since :meth:`reset`.
    """

    def __init__(self, sync=None, clock=time.perf_counter):
        self.sync = sync
        self.clock = clock
        self.stack = []
        self.totals = {}

    def reset(self):
        self.totals = {}

    @contextlib.contextmanager
    def part(self, name):
        if self.sync:
            self.sync()
        start = self.clock()
        self.stack.append([name, 0.0])
        try:
            yield
        finally:
            if self.sync:
                self.sync()
            elapsed = self.clock() - start
            _, children = self.stack.pop()
            self.totals[name] = self.totals.get(name, 0.0) + elapsed - children
            if self.stack:
                self.stack[-1][1] += elapsed

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)
        timed.__wrapped__ = fn
        return timed


@contextlib.contextmanager
def instrumented(timer):
    """Time the parts of ``MixingUpdater.update_core`` through the module-level functions it calls
    (restored on exit). Per-setup pieces (iterator, converter, model, optimizer) are wrapped by
    :func:`instrument_setup`."""
    patches = [(intermix, 'phase_shift', 'mixing'), (intermix, 'compute_gain', 'mixing'),
               (intermix.Mixer, '__call__', 'mixing'), (intermix, 'mix_targets', 'loss'),
               (intermix, 'kl_divergence', 'loss'), (F, 'softmax_cross_entropy', 'loss'),
               (chainer.Variable, 'backward', 'backward')]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    try:
        for owner, attr, name in patches:
            setattr(owner, attr, timer.wrap(name, getattr(owner, attr)))
        yield timer
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def instrument_setup(timer, updater, model, optimizer):
    it = updater.get_iterator('main')
    it.next = timer.wrap('data', it.next)
    updater.converter = timer.wrap('data', updater.converter)
    model.forward = timer.wrap('forward', model.forward)
    optimizer.update = timer.wrap('update', optimizer.update)


def synthetic_data(n_clips, n_classes, fs, seed=0):
    """``n_clips`` int16 clips of 5 s at ``fs`` Hz (noise bursts with a random envelope), labels
    cycling through the classes; returned as ((sounds, labels), (sounds, labels)) train/test."""
    rng = np.random.default_rng(seed)
    n = 5 * int(fs)

    def clip(_):
        env = np.repeat(rng.uniform(0.0, 1.0, 50), n // 50 + 1)[:n]
        return np.round(np.clip(0.3 * env * rng.standard_normal(n), -1, 1) * 32767).astype(np.int16)

    labels = np.arange(n_clips, dtype=np.int32) % n_classes
    sounds = [clip(i) for i in range(n_clips)]
    n_test = max(1, n_clips // 5)
    return (sounds, labels), (sounds[:n_test], labels[:n_test])


def summary(values):
    """median, min, max, p25, p75 of a list of numbers (rounded)."""
    a = np.asarray(values, dtype=np.float64)
    return {'median': round(float(np.median(a)), 4), 'min': round(float(a.min()), 4),
            'max': round(float(a.max()), 4), 'p25': round(float(np.percentile(a, 25)), 4),
            'p75': round(float(np.percentile(a, 75)), 4), 'n': int(a.size)}


def log(msg):
    print(f'[bench] {msg}', file=sys.stderr, flush=True)


class Setup:
    """One copy of the training set-up (model, optimizer, iterators, updater) for one conv path."""

    def __init__(self, name, opt, train_data, test_data, device, seed, timer, stock):
        self.name, self.opt, self.device, self.stock = name, opt, device, stock
        model, optimizer, train_iter, _, rseed = training.setup_split(
            opt, train_data, test_data, device, seed)
        self.model, self.optimizer, self.train_iter = model, optimizer, train_iter
        self.updater = training.MixingUpdater(train_iter, optimizer, learning.build(opt), device,
                                               seed=rseed + 2)
        self.timer = timer
        instrument_setup(timer, self.updater, model, optimizer)
        n_test = min(len(test_data[0]), opt.testBatchSize * (opt.testBatches + 1))
        self.test_data = (test_data[0][:n_test], test_data[1][:n_test])
        self.steps, self.parts, self.rss = [], [], []
        self.gpu_pool_peak = 0

    @contextlib.contextmanager
    def conv_path(self):
        previous = fastconv.set_enabled(not self.stock)
        try:
            yield
        finally:
            fastconv.set_enabled(previous)

    def step(self, record=True):
        sync = self.timer.sync
        self.timer.reset()
        with self.conv_path(), PeakRSS() as mem:
            if sync:
                sync()
            t0 = time.perf_counter()
            self.updater.update()
            if sync:
                sync()
            elapsed = time.perf_counter() - t0
        if self.device.xp is not np:
            pool = self.device.xp.get_default_memory_pool()
            self.gpu_pool_peak = max(self.gpu_pool_peak, pool.total_bytes())
        if record:
            parts = dict(self.timer.totals)
            parts['other'] = max(0.0, elapsed - sum(parts.values()))
            self.steps.append(elapsed)
            self.parts.append(parts)
            self.rss.append(mem.peak_mb)
        return elapsed

    def clips_per_step(self):
        return self.opt.batchSize * (2 if self.opt.mixing else 1)

    def test(self):
        """(seconds, crops, clips) of the 10-crop test over the timed batches (one warm-up)."""
        opt = self.opt
        sounds, labels = self.test_data
        warm = min(len(sounds), opt.testBatchSize)
        conv = chainer.dataset.concat_examples
        with self.conv_path():
            evaluation.ten_crop_counts(self.model, training.test_iterator(
                opt, sounds[:warm], labels[:warm]), conv, self.device)
            timed = slice(warm, None) if len(sounds) > warm else slice(0, warm)
            it = training.test_iterator(opt, sounds[timed], labels[timed])
            sync = self.timer.sync
            if sync:
                sync()
            t0 = time.perf_counter()
            _, clips = evaluation.ten_crop_counts(self.model, it, conv, self.device)
            if sync:
                sync()
            seconds = time.perf_counter() - t0
        return seconds, clips * opt.nCrops, clips

    def train_report(self):
        cps = [self.clips_per_step() / s for s in self.steps]
        names = sorted({k for p in self.parts for k in p})
        parts = {k: round(float(np.median([p.get(k, 0.0) for p in self.parts])), 4)
                 for k in names}
        mixing = sum(p.get('mixing', 0.0) for p in self.parts) / sum(self.steps)
        out = {'clips_per_step': self.clips_per_step(), 'step_s': summary(self.steps),
               'clips_per_s': summary(cps), 'parts_s': parts,
               'mixing_share': round(mixing, 5),
               'peak_rss_rise_mb': max(self.rss)}
        if self.device.xp is not np:
            out['gpu_pool_peak_mb'] = round(self.gpu_pool_peak / 2 ** 20, 1)
        return out

    def finalize(self):
        if hasattr(self.train_iter, 'finalize'):
            self.train_iter.finalize()


def iterator_throughput(opt, train_data, n_workers, n_batches, seed):
    """Clips/s delivered by the training iterator alone (no model), after two warm-up batches."""
    train_iter = training.train_iterator(opt.replace(nWorkers=n_workers), *train_data,
                                         distributed.rank_seed(seed, 0))
    try:
        for _ in range(2):
            train_iter.next()
        t0 = time.perf_counter()
        clips = 0
        for _ in range(n_batches):
            batch = train_iter.next()
            clips += len(batch) * (2 if opt.mixing else 1)
        return clips / (time.perf_counter() - t0)
    finally:
        if hasattr(train_iter, 'finalize'):
            train_iter.finalize()


def build_parser():
    p = opts.build_parser()
    p.prog = PROG
    p.description = 'Throughput and memory of one training configuration (see bench.py).'
    for action in p._actions:  # --data is optional here (synthetic clips), --dataset defaults
        if action.dest == 'data':
            action.required, action.default = False, None
            action.help = 'folder made by esc_gen.py (default: synthetic clips)'
        elif action.dest == 'dataset':
            action.required, action.default = False, 'esc10'
    g = p.add_argument_group('benchmark')
    g.add_argument('--steps', type=int, default=5, help='timed training steps (per path)')
    g.add_argument('--warmupSteps', type=int, default=1,
                   help='untimed training steps first (per path)')
    g.add_argument('--testBatches', type=int, default=2, help='timed test batches')
    g.add_argument('--iterBatches', type=int, default=20,
                   help='batches timed for the iterator alone')
    g.add_argument('--clips', type=int, default=128,
                   help='synthetic clips when --data is not given')
    g.add_argument('--compare', action='store_true',
                   help='stock Chainer vs fast NumPy CPU convolution, interleaved, with ratios')
    g.add_argument('--profileSteps', type=int, default=0,
                   help='after the timed steps, this many more under a per-function profile '
                        '(forward and backward of every Chainer function; 0: none)')
    g.add_argument('--loopEpochs', type=int, default=2,
                   help='epochs of the whole-loop run of main.py (0: skip it)')
    g.add_argument('--out', default=None, help='also write the JSON to this file')
    return p


# bench.py's own options: dropped from the command line handed to main.py (True: takes a value).
BENCH_ONLY = {'--profileSteps': True, '--steps': True, '--warmupSteps': True,
              '--testBatches': True, '--iterBatches': True, '--clips': True, '--compare': False,
              '--loopEpochs': True, '--out': True}
# Options the whole-loop run sets itself.
LOOP_SET = {'--nEpochs': True, '--testEvery': True, '--split': True, '--save': True,
            '--resume': False, '--data': True, '--dataset': True}


def main_argv(argv, drop):
    """``argv`` without the options in ``drop`` (name -> takes a value), in either spelling
    (``--opt value`` or ``--opt=value``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split('=', 1)[0]
        if name in drop:
            skip = drop[name] and '=' not in arg
            continue
        out.append(arg)
    return out


def write_synthetic_data(root, opt, train_data, test_data):
    """The synthetic clips as a ``--data`` folder: the test clips fold 1, the training clips
    dealt to folds 2-5; returns ``root``."""
    from datagen import npzio
    (sounds, labels), (test_sounds, test_labels) = train_data, test_data
    folds = {1: (list(test_sounds), list(test_labels))}
    for k in range(2, 6):
        folds[k] = (list(sounds[k - 2::4]), list(labels[k - 2::4]))
    npzio.save_sound_npz(dataset.dataset_path(root, opt.dataset, opt.fs), folds, opt.fs,
                         [f'class{c}' for c in range(opt.nClasses)])
    return root


def whole_loop(opt, argv, step_s, test_clips_per_s, train_data, test_data):
    """The ``loop`` figures: main.py on split 1 for ``opt.loopEpochs`` epochs (see above)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix='bench-loop-') as tmp:
        data = opt.data if opt.data != '(synthetic)' else write_synthetic_data(
            os.path.join(tmp, 'data'), opt, train_data, test_data)
        save = os.path.join(tmp, 'run')
        args = main_argv(argv, {**BENCH_ONLY, **LOOP_SET}) + [
            '--data', data, '--dataset', opt.dataset, '--split', '1', '--nEpochs', str(opt.loopEpochs),
            '--testEvery', str(opt.loopEpochs), '--save', save]
        log(f'whole loop: main.py {" ".join(args)}')
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, 'main.py'), *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for text in child.stdout:  # its epoch lines, as they come
            sys.stderr.write(text)
        rc = child.wait()
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if rc != 0:
            raise UserError(f'the whole-loop run of main.py failed (exit status {rc}); '
                            f'its message is above')
        split = os.path.join(save, 'split1')
        with open(os.path.join(split, 'result.json')) as f:
            result = json.load(f)
        with open(os.path.join(split, 'log.jsonl')) as f:
            last = json.loads(f.read().splitlines()[-1])
    seconds = result['seconds_this_run']
    steps = last['iteration'] / opt.loopEpochs
    test_s = result['test_clips'] / test_clips_per_s
    predicted = step_s * steps * opt.loopEpochs + test_s
    return {'epochs': opt.loopEpochs, 'steps_per_epoch': steps, 'seconds': seconds,
            'seconds_with_start_up': round(wall, 2),
            'epochs_per_min': round(60 * opt.loopEpochs / seconds, 2),
            'step_only_epochs_per_min': round(60 / (step_s * steps), 2),
            'test_s_predicted': round(test_s, 2), 'predicted_s': round(predicted, 2),
            'ratio_to_predicted': round(seconds / predicted, 3), 'peak_rss_mb': round(peak_mb, 1)}


def parse(argv=None):
    parser = build_parser()
    opt = parser.parse_args(argv)
    if opt.data is None:
        opt.data = '(synthetic)'
    opt.split = 1
    try:
        opts.resolve(opt)
        if opt.profileSteps < 0:
            raise ValueError(f'--profileSteps must be >= 0, got {opt.profileSteps}')
        if opt.loopEpochs < 0:
            raise ValueError(f'--loopEpochs must be >= 0, got {opt.loopEpochs}')
        for key in ('steps', 'testBatches', 'iterBatches', 'clips'):
            if getattr(opt, key) < 1:
                raise ValueError(f'--{key} must be at least 1, got {getattr(opt, key)}')
        if opt.warmupSteps < 0:
            raise ValueError(f'--warmupSteps must be >= 0, got {opt.warmupSteps}')
        if opt.compare and opt.stockConv:
            raise ValueError('--compare runs both convolution paths; drop --stockConv')
    except ValueError as e:
        parser.error(str(e))
    return opts.Settings(**vars(opt))


def _environment(opt, device):
    from chainer.backends import cuda
    env = {'netType': opt.netType, 'learning': opt.learning, 'eligible': opt.eligible,
           'batchSize': opt.batchSize, 'strongAugment': opt.strongAugment,
           'data': opt.data, 'device': str(device), 'numpy': np.__version__,
           'chainer': chainer.__version__, 'cpus': os.cpu_count(),
           'openblas_num_threads': os.environ.get('OPENBLAS_NUM_THREADS'),
           'openblas_thread_timeout': os.environ.get('OPENBLAS_THREAD_TIMEOUT'),
           'malloc_keeps_freed_memory': allocator.ACTIVE,
           'openblas_coretype': os.environ.get('OPENBLAS_CORETYPE'),
           'openblas_l2_size': os.environ.get('OPENBLAS_L2_SIZE'),
           'openblas_core': fastconv.blas_core(),
           'fastconv_threads': fastconv._threads(), 'loadavg_start': list(os.getloadavg())}
    if device.xp is not np:
        env['cupy'] = cuda.cupy.__version__
        env['cudnn'] = bool(getattr(cuda, 'cudnn_enabled', False))
    return env


def run(opt, argv=None):
    device, line = runtime.select_device(opt.gpu)
    log(line)
    if opt.compare and device.xp is not np:
        raise UserError('--compare compares the two CPU convolution paths; add --gpu -1')
    if opt.compare and not fastconv.enabled():
        raise UserError(f'--compare: ${fastconv.STOCK_CONV_ENV} switches the fast path off; '
                        f'unset it')
    if opt.nWorkers is None:
        opt = opt.replace(nWorkers=runtime.default_workers(device))
    seed = 1 if opt.seed is None else opt.seed
    if opt.data == '(synthetic)':
        train_data, test_data = synthetic_data(opt.clips, opt.nClasses, opt.fs)
    else:
        soundset = runtime.load_data(opt, None)
        train_data, test_data = dataset.split_folds(soundset, 1)
    threads = fastconv.set_threads(opt.threads)
    try:
        return _run(opt, argv, device, train_data, test_data, seed)
    finally:
        fastconv.restore_threads(threads)


def _run(opt, argv, device, train_data, test_data, seed):
    result = _environment(opt, device)
    sync = None
    if device.xp is not np:
        sync = device.xp.cuda.get_current_stream().synchronize
    paths = [('stock', True), ('fast', False)] if opt.compare else \
        [('stock' if opt.stockConv or not fastconv.enabled() else 'fast', opt.stockConv)]
    if device.xp is not np:
        paths = [('gpu', False)]
    timer = PartTimer(sync)
    with instrumented(timer):
        setups = [Setup(name, opt, train_data, test_data, device, seed, timer, stock)
                  for name, stock in paths]
        try:
            for k in range(opt.warmupSteps):
                for s in setups:
                    log(f'{s.name}: warm-up step {k + 1}/{opt.warmupSteps}: '
                        f'{s.step(record=False):.2f} s')
            for k in range(opt.steps):
                for s in setups:
                    log(f'{s.name}: step {k + 1}/{opt.steps}: {s.step():.2f} s')
            train, test = {}, {}
            for s in setups:
                train[s.name] = s.train_report()
                seconds, crops, clips = s.test()
                test[s.name] = {'crops': crops, 'seconds': round(seconds, 3),
                                'crops_per_s': round(crops / seconds, 3),
                                'clips_per_s': round(clips / seconds, 3)}
                log(f'{s.name}: test {crops} crops in {seconds:.2f} s')
            profile = {}
            for s in setups if opt.profileSteps else ():
                hook = LayerProfile(sync)
                with hook:
                    for k in range(opt.profileSteps):
                        s.step(record=False)
                profile[s.name] = hook.summary(opt.profileSteps)
                log(f'{s.name}: profiled {opt.profileSteps} step(s)')
        finally:
            for s in setups:
                s.finalize()
    workers = opt.nWorkers if opt.nWorkers > 0 else 2
    iterator = {}
    for n in (0, workers):
        cps = iterator_throughput(opt, train_data, n, opt.iterBatches, seed)
        iterator[f'workers_{n}'] = {'clips_per_s': round(cps, 2)}
        log(f'iterator alone, {n} worker process(es): {cps:.1f} clips/s')
    best_train = max(v['clips_per_s']['median'] for v in train.values())
    iterator['ratio_to_train'] = round(iterator[f'workers_{workers}']['clips_per_s'] / best_train,
                                       2)
    result.update(train=train, test=test, iterator=iterator)
    if profile:
        result['profile'] = profile
    if opt.compare:
        result['speedup'] = {
            'train_clips_per_s': round(train['fast']['clips_per_s']['median'] /
                                       train['stock']['clips_per_s']['median'], 3),
            'test_crops_per_s': round(test['fast']['crops_per_s'] /
                                      test['stock']['crops_per_s'], 3)}
        stock_rss = train['stock']['peak_rss_rise_mb']
        result['rss_ratio'] = round(train['fast']['peak_rss_rise_mb'] / stock_rss, 3) \
            if stock_rss > 0 else None
    if opt.loopEpochs:
        name = 'fast' if 'fast' in train else next(iter(train))
        result['loop'] = whole_loop(opt, sys.argv[1:] if argv is None else argv,
                                    train[name]['step_s']['median'],
                                    test[name]['clips_per_s'], train_data, test_data)
        log(f'whole loop: {result["loop"]["epochs_per_min"]} epochs/min '
            f'(steps only: {result["loop"]["step_only_epochs_per_min"]}); '
            f'{result["loop"]["ratio_to_predicted"]}x the steps and the test')
    result['process'] = {'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                              / 1024, 1),
                         'loadavg_end': list(os.getloadavg())}
    return result


def main(argv=None):
    opt = parse(argv)
    try:
        result = run(opt, argv)
    except UserError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    print(text)
    if opt.out:
        utils.write_json(opt.out, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
