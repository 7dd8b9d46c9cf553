"""The run record: ``record.json`` in every split folder (docs/method.md §4).

What is needed to rerun a split exactly (:func:`rerun_command`, :func:`settings_of`) and to
tell, later, whether the code or the data has changed since (:func:`record_differences`, used
by ``--resume``, ``--testOnly`` and ``predict.py``): the resolved options, the seed, versions,
device, git commit and the data file's size and SHA-256 (:func:`data_record`).
"""
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess

import numpy as np

import compat  # noqa: F401
import chainer

import utils


def settings_of(opt):
    """The options that define a run, as a JSON-able dict (recorded in result.json)."""
    keys = ['dataset', 'netType', 'learning', 'mixing', 'eligible', 'combination', 'mixup_type',
            'gainSource', 'strongAugment', 'nEpochs', 'LR', 'schedule', 'warmup', 'batchSize',
            'weightDecay', 'momentum', 'nCrops', 'testEvery', 'testBatchSize', 'fs',
            'inputLength', 'nClasses']
    settings = {k: getattr(opt, k, None) for k in keys}
    # Multi-process runs (recorded so that --resume refuses another number of ranks: the
    # snapshot's iterator position belongs to shards of this size).
    settings.update(ranks=getattr(opt, 'ranks', 1), mnBN=bool(getattr(opt, 'mnBN', False)))
    if getattr(opt, 'noShuffle', False):
        settings['noShuffle'] = True
    return settings


# ---------------------------------------------------------------------------------------------
# The run record: record.json in every split folder, what is needed to rerun the split exactly
# and to tell, later, whether the code or the data has changed since (--testOnly, predict.py).

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
RECORD_FILE = 'record.json'
RECORD_FORMAT = 1
_SHA256 = {}  # (path, size, mtime_ns) -> hex digest, so that each file is hashed once


def file_sha256(path):
    """SHA-256 (hex str) of the file ``path``, read in 1 MiB blocks; computed once per process
    for a given (path, size, modification time). Raises OSError if it cannot be read."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def data_record(soundset):
    """What identifies a run's data file (``datagen.npzio.SoundSet`` as loaded by main.py).

    Returns a JSON-able dict: ``file`` (absolute path), ``bytes``, ``sha256``, ``fs`` (Hz),
    ``class_names`` (label order), ``clips_per_fold`` {fold: clips} and ``legacy_format``.
    """
    path = os.path.abspath(soundset.path)
    return {'file': path, 'bytes': os.path.getsize(path), 'sha256': file_sha256(path),
            'fs': int(soundset.fs), 'class_names': [str(c) for c in soundset.class_names],
            'clips_per_fold': {str(k): len(soundset.folds[k][0]) for k in sorted(soundset.folds)},
            'legacy_format': bool(soundset.legacy)}


def class_names(data, n_classes):
    """The ``n_classes`` names of a network's outputs: those of the data file (``data``, a
    :func:`data_record`, or None), completed with 'class{k}' where it names fewer (a legacy
    pickled file names only the labels it holds, docs/method.md §10.4)."""
    names = [str(c) for c in (data or {}).get('class_names', [])][:n_classes]
    return names + [f'class{k}' for k in range(len(names), n_classes)]


def _git(root, *args):
    return subprocess.run(['git', '-C', root, *args], capture_output=True, check=True,
                          timeout=60).stdout


def code_record(root=REPO_ROOT):
    """The version of the code in ``root`` (the repository holding this file), from git.

    Returns ``{'commit': full hash, 'clean': bool, 'changed': [paths], 'diff_sha256': hex or
    None}``: ``changed`` lists tracked files that differ from the commit and untracked ``.py``
    files (ignored files and other untracked files, such as results, do not count);
    ``diff_sha256`` hashes ``git diff HEAD`` and the untracked ``.py`` files, so that two
    records of the same commit tell whether their uncommitted changes are the same. Outside a
    git checkout, or without git, ``commit`` and ``clean`` are None and ``note`` says why.
    """
    try:
        commit = _git(root, 'rev-parse', 'HEAD').decode().strip()
        status = _git(root, 'status', '--porcelain=v1', '-z', '--untracked-files=all')
        diff = _git(root, 'diff', 'HEAD', '--binary')
    except (OSError, subprocess.SubprocessError):
        return {'commit': None, 'clean': None, 'changed': [], 'diff_sha256': None,
                'note': f'{root} is not a git checkout, or git is not installed'}
    entries = iter(status.decode('utf-8', 'replace').split('\0'))
    changed, untracked = [], []
    for entry in entries:
        if not entry:
            continue
        code, name = entry[:2], entry[3:]
        if code[0] in 'RC':
            next(entries, None)  # the rename's or copy's source path
        if code == '??':
            if name.endswith('.py'):
                untracked.append(name)
            continue
        changed.append(name)
    digest = None
    if changed or untracked:
        h = hashlib.sha256(diff)
        for name in sorted(untracked):
            h.update(name.encode())
            with open(os.path.join(root, name), 'rb') as f:
                h.update(f.read())
        digest = h.hexdigest()
    return {'commit': commit, 'clean': not (changed or untracked),
            'changed': sorted(changed + untracked), 'diff_sha256': digest}


def versions():
    """Versions of Python, NumPy, SciPy, Chainer and CuPy (None when CuPy is not installed)."""
    import scipy
    from chainer.backends import cuda
    return {'python': platform.python_version(), 'numpy': np.__version__,
            'scipy': scipy.__version__, 'chainer': chainer.__version__,
            'cupy': cuda.cupy.__version__ if cuda.available else None}


def processor_name(cpuinfo='/proc/cpuinfo'):
    """The processor's model name ('AMD EPYC ...', 'Intel(R) Xeon(R) ...'): the first ``model
    name`` line of ``cpuinfo`` (Linux), else ``platform.processor()`` or the machine type
    ('x86_64') where no name is to be had."""
    try:
        with open(cpuinfo, encoding='utf-8', errors='replace') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def processor_id(cpuinfo='/proc/cpuinfo'):
    """'family F model M stepping S' of the first processor in ``cpuinfo`` (Linux x86), or None:
    it tells processor generations apart where the model name does not (virtual machines name
    2-core slices of several AMD generations just 'AMD EPYC')."""
    fields = {}
    try:
        with open(cpuinfo, encoding='utf-8', errors='replace') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if not key and fields:
                    break                        # the end of the first processor's block
                if key in ('cpu family', 'model', 'stepping') and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        return None
    if 'cpu family' not in fields or 'model' not in fields:
        return None
    return 'family %s model %s stepping %s' % (fields['cpu family'], fields['model'],
                                                fields.get('stepping', '?'))


def device_record(device):
    """The Chainer device a run used: ``chainer_device`` ('@numpy', '@cupy:0'), ``kind`` and, on
    the CPU, the processor (:func:`processor_name`, :func:`processor_id`), the OpenBLAS kernel
    family (``fastconv.blas_core``), core count, convolution path (fastconv or stock Chainer) and
    threads (``--threads``); on a GPU its name and whether cuDNN is used."""
    record = {'chainer_device': str(device)}
    if device.xp is np:
        import fastconv
        record.update(kind='CPU', processor=processor_name(), processor_id=processor_id(),
                      blas_core=fastconv.blas_core(), cpus=os.cpu_count(),
                      convolution='fastconv' if fastconv.enabled() else 'stock Chainer',
                      threads=fastconv._threads())
    else:
        from chainer.backends import cuda
        props = cuda.cupy.cuda.runtime.getDeviceProperties(device.device.id)
        record.update(kind='GPU', name=props['name'].decode(errors='replace'),
                      cudnn=bool(getattr(cuda, 'cudnn_enabled', False)))
    return record


def seed_for_split(base, split):
    """The seed of split ``split`` (int) given the base ``--seed``: base + 1000 x split
    (docs/method.md §6.6), so that every split of a run draws its own streams."""
    return base + 1000 * split


def base_seed(seed, split):
    """The ``--seed`` that gives split ``split`` the seed ``seed`` (:func:`seed_for_split`
    inverted)."""
    return seed - 1000 * split


def rerun_command(opt, split, seed):
    """The ``main.py`` command that reruns split ``split``: every resolved setting as an
    explicit flag, and ``--seed`` the base from which the split's ``seed`` was derived
    (seed = base + 1000 x split, docs/method.md §6.6), so the same data, settings and random
    draws (every stream is a function of the seed and a counter, whatever ``--nWorkers``; on the
    CPU the weights are byte-identical, on a GPU equal to the kernels' float rounding). Run it
    from the repository root; give another ``--save`` to keep the first run."""
    args = ['--data', opt.data, '--dataset', opt.dataset, '--netType', opt.netType,
            '--learning', opt.learning]
    if opt.mixing:
        args += ['--eligible', *map(str, opt.eligible), '--combination', opt.combination,
                 '--mixup_type', opt.mixup_type, '--gainSource', opt.gainSource]
    if opt.strongAugment:
        args.append('--strongAugment')
    args += ['--nEpochs', str(opt.nEpochs), '--LR', repr(opt.LR),
             '--schedule', *map(repr, opt.schedule), '--warmup', str(opt.warmup),
             '--batchSize', str(opt.batchSize), '--weightDecay', repr(opt.weightDecay),
             '--momentum', repr(opt.momentum), '--nCrops', str(opt.nCrops),
             '--testEvery', str(opt.testEvery), '--testBatchSize', str(opt.testBatchSize),
             '--split', str(split), '--seed', str(base_seed(seed, split)), '--save', opt.save]
    for flag in ('gpu', 'nWorkers', 'threads'):
        if getattr(opt, flag, None) is not None:
            args += [f'--{flag}', str(getattr(opt, flag))]
    for flag in ('stockConv', 'allowPickle', 'noShuffle', 'mnBN'):
        if getattr(opt, flag, False):
            args.append(f'--{flag}')
    command = utils.command('main.py', cwd=REPO_ROOT)
    if getattr(opt, 'communicator', None):
        args += ['--communicator', opt.communicator]
        command = f'.venv/bin/mpiexec -n {getattr(opt, "ranks", 1)} {command}'
    return f'{command} {shlex.join(args)}'


def _json_able(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def run_record(opt, split, model, device, seed, data=None):
    """The record of one split's run (written as ``record.json`` by :func:`write_run_record`).

    Args:
        opt: the resolved options of main.py; split (int), seed (int): the split and its seed.
        model: the network (its parameter count is recorded).
        device: the Chainer device.
        data: :func:`data_record` of the data file, or None.

    Returns a JSON-able dict: ``format``, ``written`` (UTC, ISO 8601), ``split``, ``seed``,
    ``command`` (``argv`` as typed, ``cwd``, and ``rerun``, :func:`rerun_command`), ``options``
    (every resolved option), ``network`` (netType, parameters, fs, input_length, n_classes),
    ``class_names``, ``data`` (:func:`data_record` plus ``dataset`` and ``trim``), ``versions``
    (:func:`versions`), ``device`` (:func:`device_record`), ``code`` (:func:`code_record`) and
    ``host`` (platform, CPUs).
    """
    from datagen import registry
    info = registry.get(opt.dataset)
    return {
        'format': RECORD_FORMAT,
        'written': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'split': split, 'seed': seed,
        'command': {'argv': getattr(opt, 'argv', None), 'cwd': os.getcwd(),
                    'rerun': rerun_command(opt, split, seed)},
        'options': {k: v for k, v in sorted(vars(opt).items()) if k != 'argv' and _json_able(v)},
        'network': {'netType': opt.netType,
                    'parameters': int(sum(p.size for p in model.params() if p.array is not None)),
                    'fs': opt.fs, 'input_length': opt.inputLength, 'n_classes': opt.nClasses},
        'class_names': class_names(data, opt.nClasses),
        'data': dict(data or {}, dataset=opt.dataset, trim=info.trim),
        'versions': versions(), 'device': device_record(device), 'code': code_record(),
        'host': {'platform': platform.platform(), 'cpus': os.cpu_count()},
    }


def write_run_record(split_dir, opt, split, model, device, seed, data=None, resume=False):
    """Write ``split_dir``/record.json (:func:`run_record`); returns warning lines (str).

    A new run writes its record. ``--resume`` keeps the record of the run's start, appends the
    resuming process's code, versions, device and command to its ``resumed`` list, and returns
    what differs from the start (:func:`record_differences`); a split without a record (begun
    before records were written) gets one, noting that it was written at a resume.
    """
    path = os.path.join(split_dir, RECORD_FILE)
    record = run_record(opt, split, model, device, seed, data)
    warnings = []
    first = read_run_record(split_dir) if resume else None
    if first is not None:
        warnings = record_differences(first, data=data, now=record)
        first.setdefault('resumed', []).append(
            {key: record[key] for key in ('written', 'command', 'versions', 'device', 'code')})
        record = first
    elif resume:
        record['note'] = 'written when the run was resumed; its start has no record'
    utils.write_json(path, record)
    return warnings


def read_run_record(split_dir):
    """The split's record.json as a dict, or None when it has none (a run from before records
    were written). Raises UserError naming the file when it is not readable JSON."""
    path = os.path.join(split_dir, RECORD_FILE)
    if not os.path.isfile(path):
        return None
    return utils.read_json_object(path, 'restore it from a backup, or delete it (the run then '
                                        'has no record)')


def _code_text(code):
    if not code or code.get('commit') is None:
        return 'no git commit known'
    text = f'commit {code["commit"][:12]}'
    if not code.get('clean'):
        changed = code.get('changed') or []
        text += (f' with uncommitted changes to {", ".join(changed[:3])}'
                 + (f' and {len(changed) - 3} more' if len(changed) > 3 else ''))
    return text


def record_differences(record, data=None, now=None):
    """What differs between a run record and the present, as one-line texts (empty: nothing).

    Args:
        record: a run record (:func:`run_record`, read back from record.json).
        data: :func:`data_record` of the data file in use now, or None (not compared).
        now: the present's record (compared: ``code``, ``versions``); None computes them.

    Compared: the code (git commit and uncommitted changes), the versions of Python, NumPy,
    SciPy, Chainer and CuPy, where ``now`` has a CPU ``device`` (a resume) the OpenBLAS kernel
    family (``blas_core``: another one rounds differently, so the resumed run is not
    bit-identical to an uninterrupted one), and, with ``data``, the data file (size and
    SHA-256; another path to the same bytes is not a difference).
    """
    now = now or {'code': code_record(), 'versions': versions()}
    lines = []
    before, current = record.get('code') or {}, now['code']
    if (before.get('commit'), before.get('diff_sha256')) != (current.get('commit'),
                                                              current.get('diff_sha256')):
        lines.append(f'the code differs from the run record: trained with '
                     f'{_code_text(before)}, now {_code_text(current)}; results may differ')
    old_versions = record.get('versions') or {}
    for key, name in (('python', 'Python'), ('numpy', 'NumPy'), ('scipy', 'SciPy'),
                      ('chainer', 'Chainer'), ('cupy', 'CuPy')):
        if key in old_versions and old_versions[key] != now['versions'].get(key):
            lines.append(f'{name} {old_versions[key] or "absent"} when trained, '
                         f'{now["versions"].get(key) or "absent"} now; results may differ')
    old_core = (record.get('device') or {}).get('blas_core')
    new_core = (now.get('device') or {}).get('blas_core')
    if old_core and new_core and old_core != new_core:
        lines.append(f'OpenBLAS kernel {old_core} when trained, {new_core} now (another '
                     f'processor generation): the same seed no longer gives bit-identical '
                     f'weights')
    old_data = record.get('data') or {}
    if data is not None and old_data.get('sha256') and (
            old_data.get('sha256'), old_data.get('bytes')) != (data['sha256'], data['bytes']):
        lines.append(f'the data differs from the run record: {data["file"]} ({data["bytes"]} '
                     f'bytes, SHA-256 {data["sha256"][:12]}) is not the file trained on '
                     f'({old_data.get("file")}, {old_data.get("bytes")} bytes, SHA-256 '
                     f'{old_data["sha256"][:12]})')
    return lines

