"""Train and test a sound classifier per split; report the error rate per split and overall.

    .venv/bin/python main.py --data DATA --dataset esc10 --netType envnetv2 --learning intermix \
        --strongAugment --split 1

One model per split (the test fold); ``--split -1`` runs every split. The result of each split
goes to ``--save``/split{k}/ (see ``training.py``); the summary over the splits run (mean and
standard error of the final error, as Table 1 of the paper) is printed and written to
``--save``/summary.json.

Multi-process training (ChainerMN over MPI; README, "Multi-process training"):

    .venv/bin/mpiexec -n 4 .venv/bin/python main.py ... --communicator pure_nccl [--mnBN]  # 4 GPUs
    .venv/bin/mpiexec -n 2 .venv/bin/python main.py ... --communicator naive               # CPU

runs one job whose ranks each train on a scattered part of the training clips (``--batchSize``
per rank); only rank 0 writes and prints. Without ``--communicator`` nothing imports ChainerMN
or mpi4py.

Exit status: 0 done; 2 a user error (bad flag, missing, damaged or foreign data or run file, a
--save that cannot be written), one line on stderr, nothing written changed; 3 training stopped
on a non-finite loss or non-finite weights (the last snapshot is kept); 1 a write failed (full
disk, permissions: one line; --resume continues); 143 (SIGTERM) or 130 (SIGINT, Ctrl-C): stopped
at a step boundary with a snapshot, one line with the command that continues (a second
signal: 130 at once, the last snapshot kept). Under MPI
the same codes; a rank that fails after the collective set-up checks ends the whole job with
``MPI_Abort`` (status 1 for an unexpected exception, with its traceback).
"""
import errno
import json
import os
import shlex
import shutil
import sys
import tempfile
import traceback

import blasenv  # noqa: F401  (before NumPy: OpenBLAS thread timeout)
import allocator  # noqa: F401  (glibc keeps freed memory for the next step)
import numpy as np

import compat  # noqa: F401
import chainer

import checkpoint
import dataset
import distributed
import evaluation
import fastconv
import opts
import runrecord
import runtime
import training
import utils
from utils import UserError

PROG = 'main.py'
# OSErrors of the file system (not of the program) that main() reports as one line, status 1.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)


# What each JSON file of a split must hold (key: test of its value), and what to do when it
# does not: checked by read_split_json wherever main.py reads them.
SPLIT_JSON = {
    'run.json': ({'seed': lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  'settings': lambda v: isinstance(v, dict)},
                 'it records the split\'s seed and settings: restore it, or delete the folder '
                 '{split_dir} to run the split again from the start'),
    'result.json': ({'final_error': lambda v: _finite(v) and 0 <= v <= 100,
                     'final_epoch': lambda v: isinstance(v, int) and v >= 1},
                    'delete it and rerun with --resume: the split is finished again from its '
                    'snapshot.npz (or trained again without one)'),
}


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def read_split_json(path):
    """The JSON object of a split's ``run.json`` or ``result.json`` (by the file's name), checked
    against :data:`SPLIT_JSON`. Raises UserError naming the file, what is wrong and what to do
    (a damaged file is never read as if it were fine, nor overwritten)."""
    name = os.path.basename(path)
    required, fix = SPLIT_JSON[name]
    fix = fix.format(split_dir=os.path.dirname(path))
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable or not JSON ({" ".join(str(e).split())}); '
                        f'{fix}') from None
    if not isinstance(value, dict):
        raise UserError(f'{path}: not a JSON object; {fix}')
    for key, valid in required.items():
        if key not in value or not valid(value[key]):
            what = 'missing' if key not in value else f'invalid ({value[key]!r})'
            raise UserError(f'{path}: {key} {what}; {fix}')
    return value


def check_save(save):
    """Refuse a ``--save`` that is a file or cannot be written, before anything is written.

    Walks up to the nearest existing folder (``save`` itself when it exists) and creates and
    deletes a temporary file there, so read-only file systems and missing permissions are
    found as well as a file in the way. Raises UserError naming ``--save``.
    """
    probe = os.path.abspath(save)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = 'is a file' if probe == os.path.abspath(save) else f'lies under the file {probe}'
        raise UserError(f'--save {save}: {where}, not a folder; give a folder path (one '
                        f'subfolder per split is written there)')
    try:
        fd, tmp = tempfile.mkstemp(prefix='.write-test-', dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise UserError(f'--save {save}: cannot write in {probe} ({e.strerror or e}); choose '
                        f'another --save, or make {probe} writable') from None


def select_splits(opt, soundset, say=print):
    """``--split -1`` over a file lacking folds: keep the splits whose folds are present (and hold
    clips), and ``say`` which are missing; an explicit ``--split`` is left to
    :func:`dataset.split_folds`, which names it. Returns the settings with those ``splits``
    (``opt`` itself when nothing is missing); UserError when no fold is left."""
    missing = dataset.missing_folds(soundset, opt.nFolds)
    if opt.split != -1 or not missing:
        return opt
    opt = opt.replace(splits=[k for k in opt.splits if k not in missing])
    if not opt.splits:
        raise UserError(f'--split -1: {soundset.path} holds no clips of any fold of '
                        f'{opt.dataset}; regenerate it')
    say(f'{soundset.path}: fold{"s" * (len(missing) > 1)} {", ".join(map(str, missing))} of '
        f'{opt.nFolds} missing or empty: running split{"s" * (len(opt.splits) > 1)} '
        f'{", ".join(map(str, opt.splits))} only', flush=True)
    return opt


def split_seed(opt, split, split_dir):
    """The split's seed: recorded in run.json at its first start and reused by --resume."""
    path = os.path.join(split_dir, 'run.json')
    if os.path.isfile(path):
        return read_split_json(path)['seed']
    base = opt.seed if opt.seed is not None else int(np.random.SeedSequence().entropy % 2 ** 31)
    return runrecord.seed_for_split(base, split)


def check_split_dir(opt, split, split_dir):
    """Refuse to overwrite or silently mix runs. Returns 'done', 'resume' or 'new'.

    ``--resume`` checks the settings and ``--seed`` against the split's run.json whether the
    split is finished or not: a different setting or seed is refused (UserError, one line
    listing the differences), so that nothing (the summary included) is rewritten under labels
    that are not the run's."""
    result = os.path.join(split_dir, 'result.json')
    snapshot = os.path.join(split_dir, 'snapshot.npz')
    run_file = os.path.join(split_dir, 'run.json')
    finished = os.path.isfile(result)
    if finished and not opt.resume:
        raise UserError(f'--save {opt.save}: split {split} is finished ({result}); pass '
                        f'--resume to skip finished splits, or choose another --save')
    if os.path.isfile(run_file):
        recorded = read_split_json(run_file)
        before = recorded['settings']
        now = runrecord.settings_of(opt)
        changed = [k for k in now if k in before and before[k] != now[k]]
        if (opt.resume and opt.seed is not None
                and runrecord.seed_for_split(opt.seed, split) != recorded['seed']):
            base = runrecord.base_seed(recorded['seed'], split)
            raise UserError(f'--resume: split {split} in {split_dir} was run with --seed {base} '
                            f'(split seed {recorded["seed"]}), not --seed {opt.seed}; drop '
                            f'--seed or pass --seed {base}')
        if opt.resume and changed:
            diff = ', '.join(f'{k} {before[k]} -> {now[k]}' for k in changed)
            raise UserError(f'--resume: split {split} in {split_dir} was '
                            f'{"run" if finished else "started"} with other settings ({diff}); '
                            f'give its settings, or choose another --save')
        if not opt.resume and os.path.isfile(snapshot):
            raise UserError(f'--save {opt.save}: split {split} has an unfinished run '
                            f'({snapshot}); pass --resume to continue it, or choose another --save')
    if finished:
        read_split_json(result)
        return 'done'
    if opt.resume and os.path.isfile(snapshot):
        checkpoint.check_snapshot(snapshot, split)
        return 'resume'
    return 'new'


def prepare_split(opt, split, split_dir, lock):
    """Rank 0's bookkeeping before a split: ('done', result) or (state, seed), run.json written.

    First takes ``lock`` (:class:`utils.FolderLock` of the split folder, held until the split
    ends): a split another live process is writing is refused at once (UserError naming it)."""
    gone = lock.acquire(f'--save {opt.save}: split {split}')
    state = check_split_dir(opt, split, split_dir)
    if gone and state != 'done':
        print(f'{PROG}: split {split}: taking over the lock of process {gone.get("pid", "?")} on '
              f'host {gone.get("host", "?")}, which has ended ({lock.path})', file=sys.stderr,
              flush=True)
    if state == 'done':
        return state, read_split_json(os.path.join(split_dir, 'result.json'))
    os.makedirs(split_dir, exist_ok=True)
    seed = split_seed(opt, split, split_dir)
    if state != 'resume':  # a resumed split keeps its run.json (checked: same settings)
        utils.write_json(os.path.join(split_dir, 'run.json'),
                         {'seed': seed, 'settings': runrecord.settings_of(opt)})
    return state, seed


def run_training(opt, soundset, device, comm=None, progress=None):
    """Train every split of ``opt.splits``. With ``comm`` on every rank of an MPI job: rank 0
    checks the split folder, draws the seed and writes run.json; all ranks train together.
    ``progress`` (a dict, optional) gets ``'split'``: the split under way, for the messages of
    a run that stops."""
    say = print if comm is None or comm.rank == 0 else (lambda *a, **k: None)
    results = {}
    data = runrecord.data_record(soundset) if comm is None or comm.rank == 0 else None
    for split in opt.splits:
        if progress is not None:
            progress['split'] = split
        split_dir = os.path.join(opt.save, f'split{split}')
        train_data, test_data = distributed.all_ranks_ok(comm, dataset.split_folds, soundset, split)
        lock = utils.FolderLock(split_dir) if comm is None or comm.rank == 0 else None
        try:
            result = _train_locked_split(opt, split, split_dir, train_data, test_data, device,
                                         comm, data, lock, say)
        finally:
            if lock is not None:
                lock.release()
        results[split] = result
    return results


def _train_locked_split(opt, split, split_dir, train_data, test_data, device, comm, data, lock,
                        say):
    """One split of :func:`run_training`, the split folder's ``lock`` taken first (rank 0)."""
    state, value = distributed.on_root(comm, prepare_split, opt, split, split_dir, lock)
    if state == 'done':
        say(f'split {split}: finished before, final test error '
            f'{value["final_error"]:.2f}% (skipped)', flush=True)
        return value
    seed = value
    per_rank = ''
    if comm is not None:
        per_rank = f' (about {len(train_data[0]) // comm.size} per rank)'
    say(f'split {split}: {len(train_data[0])} training clips{per_rank}, {len(test_data[0])} '
        f'test clips, seed {seed}', flush=True)
    result = training.train_split(opt, split, split_dir, train_data, test_data, device, seed,
                                  resume=state == 'resume', comm=comm, data=data)
    say(f'split {split}: final test error {result["final_error"]:.2f}% at epoch '
        f'{result["final_epoch"]} ({result["seconds_this_run"]:.0f} s; best '
        f'{result["best_error_on_test_fold"]["error"]:.2f}% at epoch '
        f'{result["best_error_on_test_fold"]["epoch"]}, chosen on the test fold)', flush=True)
    return result


def run_test_only(opt, soundset, device):
    """``--testOnly``: the 10-crop test error of each split's saved ``model.npz`` in ``--save``.

    Args:
        opt: resolved options; ``opt.splits`` are tested, with ``opt.nCrops`` crops (the value
            recorded in the split's result.json unless ``--nCrops`` was given) and, with
            ``--fgsm``, also under FGSM attacks (written back into result.json).
        soundset: the loaded dataset (``dataset.load_dataset``).
        device: the Chainer device.

    Returns {split: {'split', 'final_error' (%), 'fgsm' (dict or None)}}; prints one line per
    split beside the error training reported, after a warning line (stderr) for each way the
    code, library versions or data file differ from the split's record.json
    (``runrecord.record_differences``). Raises UserError when a split has no model, the model
    does not fit ``--netType`` and the dataset's classes, or its record.json is damaged.
    """
    results = {}
    data = runrecord.data_record(soundset)
    for split in opt.splits:
        split_dir = os.path.join(opt.save, f'split{split}')
        model_path = os.path.join(split_dir, 'model.npz')
        if not os.path.isfile(model_path):
            raise UserError(f'--testOnly: {model_path} not found (train split {split} first, or '
                            f'point --save at the run)')
        _, (test_sounds, test_labels) = dataset.split_folds(soundset, split)
        model = training.build_model(opt, device)
        try:
            chainer.serializers.load_npz(model_path, model)
        except Exception as e:  # a damaged file, or another network or class count
            raise UserError(f'--testOnly: {model_path} cannot be loaded as --netType '
                            f'{opt.netType} with {opt.nClasses} classes ({type(e).__name__}: '
                            f'{" ".join(str(e).split())[:200]}); it is damaged or of another '
                            f'network: give the --netType it was trained with, or retrain the '
                            f'split') from None
        record = runrecord.read_run_record(split_dir)
        result_path = os.path.join(split_dir, 'result.json')
        trained = None
        if os.path.isfile(result_path):
            trained = read_split_json(result_path)
        if record is not None:
            for line in runrecord.record_differences(record, data=data):
                print(f'{PROG}: warning: split {split}: {line}', file=sys.stderr, flush=True)
        split_opt = opt
        if not getattr(opt, 'nCropsGiven', True) and trained is not None:
            # the crops the split was tested with, so that its error is reproduced
            split_opt = opt.replace(
                nCrops=int(trained.get('settings', {}).get('nCrops') or opt.nCrops))
        iterator = training.test_iterator(split_opt, test_sounds, test_labels)
        convert = chainer.dataset.concat_examples
        if opt.fgsm:
            fgsm = evaluation.fgsm_errors(model, iterator, convert, device, opt.fgsm)
            error = fgsm['clean']
        else:
            fgsm = None
            error = evaluation.ten_crop_error(model, iterator, convert, device)
        line = f'split {split}: test error {error:.2f}% ({split_opt.nCrops}-crop, {model_path})'
        if trained is not None:
            line += f'; training reported {trained["final_error"]:.2f}%'
        print(line, flush=True)
        if fgsm:
            print(f'split {split}: FGSM test error ' + ', '.join(
                f'{k} {v:.2f}%' for k, v in fgsm.items()), flush=True)
            if trained is not None:
                trained.setdefault('fgsm', {}).update(fgsm)
                utils.write_json(result_path, trained)
        results[split] = {'split': split, 'final_error': error, 'fgsm': fgsm}
    return results


def summarise(opt, results, name):
    """Print and write the summary over splits (mean +- standard error of the final error)."""
    splits = sorted(results)
    errors = [results[k]['final_error'] for k in splits]
    mean, se = utils.mean_and_standard_error(errors)
    if len(splits) == 1:
        se = None  # one split has no standard error (utils gives 0.0)
    print('split  final test error (%)')
    for k, e in zip(splits, errors):
        print(f'{k:>5}  {e:6.2f}')
    print(f'{opt.dataset} {opt.netType} {opt.learning}: test error ' + (
        f'{mean:.2f} % (one split: no standard error' if se is None else
        f'{mean:.2f} +- {se:.2f} % (mean +- standard error over {len(splits)} splits') +
        f'; {opt.nFolds} in the dataset)')
    summary = {'dataset': opt.dataset, 'netType': opt.netType, 'learning': opt.learning,
               'splits': splits, 'errors': errors, 'mean_error': mean, 'standard_error': se,
               'complete': len(splits) == opt.nFolds, 'settings': runrecord.settings_of(opt),
               'metric': 'test error (%) of the 10-crop test at the final epoch, per split'}
    fgsm = [results[k].get('fgsm') for k in splits]
    if all(fgsm):
        summary['fgsm_mean_error'] = {key: float(np.mean([f[key] for f in fgsm]))
                                      for key in fgsm[0]}
        print('FGSM test error, mean over splits: ' + ', '.join(
            f'{k} {v:.2f}%' for k, v in summary['fgsm_mean_error'].items()))
    utils.write_json(os.path.join(opt.save, name), summary)
    return summary


def mpi_world_size():
    """The number of processes mpiexec started (Open MPI or MPICH/Hydra), 1 if not under MPI."""
    for key in ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE'):
        if os.environ.get(key, '').isdigit():
            return int(os.environ[key])
    return 1


def _mpi_abort(code):
    """End the whole MPI job (every rank) with ``code``; returns ``code`` if MPI is not up."""
    try:
        from mpi4py import MPI
        if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(code)
    except ImportError:
        pass
    return code


def create_communicator(opt):
    """The ChainerMN communicator of ``--communicator`` (imports ChainerMN and mpi4py).

    With data worker processes, multiprocessing switches to ``forkserver`` before MPI starts, as
    ChainerMN recommends (forking an MPI process is unsafe with some interconnects).
    """
    from chainer.backends import cuda
    if (opt.nWorkers or 0) > 0 or (opt.nWorkers is None and opt.gpu != -1 and cuda.available):
        import multiprocessing
        multiprocessing.set_start_method('forkserver', force=True)
        p = multiprocessing.Process()  # starts the fork server before MPI is initialised
        p.start()
        p.join()
    try:
        import chainermn
        import mpi4py.MPI  # noqa: F401
    except ImportError as e:
        raise UserError(f'--communicator {opt.communicator} needs ChainerMN\'s MPI stack ({e}); '
                        f'install it with: .venv/bin/pip install -r requirements-mpi.txt') from None
    try:
        return chainermn.create_communicator(opt.communicator)
    except Exception as e:  # e.g. pure_nccl without CuPy/NCCL
        raise UserError(f'--communicator {opt.communicator}: {type(e).__name__}: {e}') from None


def main(argv=None):
    """Command-line entry point of ``main.py`` (module docstring): train or test every split.

    ``argv``: the arguments (None reads ``sys.argv``). Returns the exit status: 0 done, 2 a user
    error (one line on stderr, nothing written), 3 a non-finite loss or weights, 1 a failed write
    (one line), 143/130 stopped by SIGTERM/SIGINT with a snapshot; under MPI a failing rank ends
    the job (``MPI_Abort``).
    """
    opt = opts.parse(argv)  # read-only; opt.argv holds the arguments for the run record
    progress = {'split': '?'}  # the split under way (run_training), for the stop messages
    world = mpi_world_size()
    if opt.communicator is None and world > 1:
        # Rank 0 reports and fails the job; the others end quietly with 0, since a rank that
        # fails first makes mpiexec kill rank 0 before its message is out.
        if os.environ.get('OMPI_COMM_WORLD_RANK', os.environ.get('PMI_RANK', '0')) != '0':
            return 0
        print(f'{PROG}: error: started as {world} MPI processes without --communicator; '
              f'pass --communicator naive (CPU) or pure_nccl (GPUs), or run one process',
              file=sys.stderr, flush=True)
        return 2
    comm = None
    if opt.communicator is not None:
        try:
            comm = create_communicator(opt)
        except UserError as e:
            print(f'{PROG}: error: {e}', file=sys.stderr)
            return _mpi_abort(2)
        opt = opt.replace(ranks=comm.size)
    rank0 = comm is None or comm.rank == 0
    if rank0:
        for line in opts.describe(opt):
            print(line)
    try:
        return _run(opt, comm, progress)
    except distributed.AllRanksError as e:  # raised on every rank together: rank 0 reports it
        if rank0:
            print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2
    except UserError as e:
        return _fail(comm, f'{e}', 2)
    except checkpoint.NonFiniteLossError as e:
        snapshot = _snapshot_of(opt, progress['split'])
        epoch = checkpoint.snapshot_epoch(snapshot)  # not e.epoch - 1: snapshots are scheduled
        kept = (f'the last good checkpoint is {snapshot} (epoch {epoch})'
                if epoch is not None else 'no checkpoint was written before it')
        return _fail(comm, f'training stopped: {e}; {kept}. Lower --LR or check the data.', 3)
    except OSError as e:  # the disk, not the program: one line where it is a write or read
        if comm is not None or e.errno not in WRITE_ERRNOS:
            raise
        return _fail(comm, f'{e.filename or "a file of the run"}: {e.strerror}{_space(e)}; free '
                           f'space or fix the permissions of --save {opt.save}, then rerun with '
                           f'--resume', 1)
    except training.StoppedBySignal as e:
        if rank0:
            again = opt.argv + ([] if '--resume' in opt.argv else ['--resume'])
            print(f'{PROG}: stopped by {e}: {_snapshot_of(opt, progress["split"])} holds it; '
                  f'continue with: {utils.command(PROG)} {shlex.join(again)}', file=sys.stderr,
                  flush=True)
        return 128 + e.signum
    except KeyboardInterrupt:
        if rank0:
            print(f'\n{PROG}: interrupted; continue with the same command plus --resume',
                  file=sys.stderr)
        return 130 if comm is None else _mpi_abort(130)
    except Exception as e:  # noqa: BLE001 - under MPI: one rank's failure must end the job
        if comm is None:
            raise
        traceback.print_exc()
        return _fail(comm, f'{type(e).__name__}: {e}', 1)


def _snapshot_of(opt, split):
    """The snapshot.npz of ``split`` (named by the messages of a stopped run)."""
    return os.path.join(opt.save, f'split{split}', 'snapshot.npz')


def _space(error):
    """For a full disk: ' (writing it needs about N MB; M MB free there)', else ''."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return ''
    words = []
    needed = getattr(error, 'needed_bytes', None)
    if needed:
        words.append(f'writing it needs about {needed / 1e6:.0f} MB')
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(error.filename or '.'))).free
        words.append(f'{free / 1e6:.0f} MB free there')
    except OSError:
        pass
    return f' ({"; ".join(words)})' if words else ''


def _fail(comm, message, code):
    """Report a failure of this process; under MPI name the rank and end every rank."""
    if comm is None:
        print(f'{PROG}: error: {message}', file=sys.stderr)
        return code
    print(f'{PROG}: error: rank {comm.rank} of {comm.size}: {message}; ending all {comm.size} '
          f'ranks (MPI_Abort {code})', file=sys.stderr, flush=True)
    return _mpi_abort(code)


def _run(opt, comm, progress):
    device, line = distributed.all_ranks_ok(comm, runtime.setup_device, opt, comm)
    if opt.nWorkers is None:
        opt = opt.replace(nWorkers=runtime.default_workers(
            device, 1 if comm is None else comm.intra_size))
    threads = fastconv.set_threads(opt.threads)
    if device.xp is np:
        opt = opt.replace(threads=fastconv._threads())  # recorded, and in the rerun command
    previous = fastconv.set_enabled(fastconv.enabled() and not opt.stockConv)
    try:
        return _run_on(opt, comm, device, line, progress)
    finally:
        fastconv.set_enabled(previous)
        fastconv.restore_threads(threads)


def _run_on(opt, comm, device, line, progress):
    rank0 = comm is None or comm.rank == 0
    if device.xp is np:
        conv = ('fast NumPy path (fastconv.py: convolution, pooling, BN + ReLU)'
                if fastconv.enabled() else
                f'stock Chainer (--stockConv or ${fastconv.STOCK_CONV_ENV})')
        line += f'; convolution: {conv}; {opt.threads} thread(s)'
    if comm is None:
        print(f'{line}; {opt.nWorkers} data worker process(es)', flush=True)
    else:
        lines = comm.mpi_comm.gather(line, root=0)
        if rank0:
            for r, text in enumerate(lines):
                print(f'rank {r}: {text}; {opt.nWorkers} data worker process(es)', flush=True)
    distributed.on_root(comm, check_save, opt.save)
    soundset = runtime.load_data(opt, comm)
    opt = select_splits(opt, soundset, say=print if rank0 else lambda *a, **k: None)
    if opt.testOnly:
        results = run_test_only(opt, soundset, device)
        summarise(opt, results, 'summary_testOnly.json')
    else:
        results = run_training(opt, soundset, device, comm, progress)
        if rank0:
            summarise(opt, results, 'summary.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
