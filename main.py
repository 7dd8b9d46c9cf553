"""Train and test a sound classifier per split; report the error rate per split and overall.

    python3 main.py --data DATA --dataset esc10 --netType envnetv2 --learning intermix \
        --strongAugment --split 1

One model per split (the test fold); ``--split -1`` runs every split. The result of each split
goes to ``--save``/split{k}/ (see ``training.py``); the summary over the splits run (mean and
standard error of the final error, as Table 1 of the paper) is printed and written to
``--save``/summary.json.

Exit status: 0 done; 2 a user error (bad flag, missing or bad data), one line on stderr;
3 training stopped on a non-finite loss (the last snapshot is kept); 130 interrupted.
"""
import json
import os
import sys

import numpy as np

import compat  # noqa: F401
import chainer

import dataset
import opts
import training
import utils
from utils import UserError

PROG = 'main.py'


def select_device(gpu):
    """The Chainer device for ``--gpu`` (None: GPU 0 when CuPy sees one, else CPU), and a line
    saying which was chosen. Raises UserError if a GPU is asked for and none is usable."""
    from chainer.backends import cuda
    n_gpus = 0
    if cuda.available:
        try:
            n_gpus = cuda.cupy.cuda.runtime.getDeviceCount()
        except Exception:  # CuPy installed but no driver/device
            n_gpus = 0
    if gpu is None:
        gpu = 0 if n_gpus > 0 else -1
        how = 'default'
    else:
        how = '--gpu'
    if gpu < 0:
        reason = '' if how == '--gpu' else ' (CuPy sees no GPU)' if cuda.available else \
            ' (CuPy is not installed)'
        return chainer.get_device('@numpy'), f'device: CPU (NumPy){reason}'
    if gpu >= n_gpus:
        what = 'CuPy is not installed' if not cuda.available else f'CuPy sees {n_gpus} GPU(s)'
        raise UserError(f'--gpu {gpu}: {what}; use --gpu -1 for the CPU')
    device = chainer.get_device(f'@cupy:{gpu}')
    device.use()
    cudnn = 'with cuDNN' if getattr(cuda, 'cudnn_enabled', False) else 'without cuDNN'
    return device, f'device: GPU {gpu} (CuPy {cuda.cupy.__version__}, {cudnn}; {how})'


def split_seed(opt, split_dir):
    """The split's seed: recorded in run.json at its first start and reused by --resume."""
    path = os.path.join(split_dir, 'run.json')
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)['seed']
    base = opt.seed if opt.seed is not None else int(np.random.SeedSequence().entropy % 2 ** 31)
    return base + 1000 * opt.split_now


def check_split_dir(opt, split, split_dir):
    """Refuse to overwrite or silently mix runs. Returns 'done', 'resume' or 'new'."""
    result = os.path.join(split_dir, 'result.json')
    snapshot = os.path.join(split_dir, 'snapshot.npz')
    run_file = os.path.join(split_dir, 'run.json')
    if os.path.isfile(result):
        if opt.resume:
            return 'done'
        raise UserError(f'--save {opt.save}: split {split} is finished ({result}); pass '
                        f'--resume to skip finished splits, or choose another --save')
    if os.path.isfile(run_file):
        with open(run_file) as f:
            before = json.load(f)['settings']
        now = training.settings_of(opt)
        changed = [k for k in now if k in before and before[k] != now[k]]
        if opt.resume and changed:
            diff = ', '.join(f'{k} {before[k]} -> {now[k]}' for k in changed)
            raise UserError(f'--resume: split {split} in {split_dir} was started with other '
                            f'settings ({diff})')
        if not opt.resume and os.path.isfile(snapshot):
            raise UserError(f'--save {opt.save}: split {split} has an unfinished run '
                            f'({snapshot}); pass --resume to continue it, or choose another --save')
    return 'resume' if opt.resume and os.path.isfile(snapshot) else 'new'


def run_training(opt, soundset, device):
    results = {}
    for split in opt.splits:
        opt.split_now = split
        split_dir = os.path.join(opt.save, f'split{split}')
        train_data, test_data = dataset.split_folds(soundset, split)
        state = check_split_dir(opt, split, split_dir)
        if state == 'done':
            with open(os.path.join(split_dir, 'result.json')) as f:
                results[split] = json.load(f)
            print(f'split {split}: finished before, final error '
                  f'{results[split]["final_error"]:.2f}% (skipped)', flush=True)
            continue
        os.makedirs(split_dir, exist_ok=True)
        seed = split_seed(opt, split_dir)
        utils.write_json(os.path.join(split_dir, 'run.json'),
                         {'seed': seed, 'settings': training.settings_of(opt)})
        print(f'split {split}: {len(train_data[0])} training clips, {len(test_data[0])} test '
              f'clips, seed {seed}', flush=True)
        result = training.train_split(opt, split, split_dir, train_data, test_data, device, seed,
                                      resume=state == 'resume')
        results[split] = result
        print(f'split {split}: final test error {result["final_error"]:.2f}% at epoch '
              f'{result["final_epoch"]} ({result["seconds_this_run"]:.0f} s; best '
              f'{result["best_error_on_test_fold"]["error"]:.2f}% at epoch '
              f'{result["best_error_on_test_fold"]["epoch"]}, chosen on the test fold)', flush=True)
    return results


def run_test_only(opt, soundset, device):
    results = {}
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
        except Exception as e:  # wrong network or classes for this file
            raise UserError(f'--testOnly: {model_path} does not fit --netType {opt.netType} '
                            f'with {opt.nClasses} classes ({type(e).__name__}: {e})') from None
        iterator = training.test_iterator(opt, test_sounds, test_labels)
        convert = chainer.dataset.concat_examples
        if opt.fgsm:
            fgsm = training.fgsm_errors(model, iterator, convert, device, opt.fgsm)
            error = fgsm['clean']
        else:
            fgsm = None
            error = training.ten_crop_error(model, iterator, convert, device)
        line = f'split {split}: test error {error:.2f}% ({opt.nCrops}-crop, {model_path})'
        result_path = os.path.join(split_dir, 'result.json')
        trained = None
        if os.path.isfile(result_path):
            with open(result_path) as f:
                trained = json.load(f)
            line += f'; training reported {trained["final_error"]:.2f}%'
        print(line, flush=True)
        if fgsm:
            print(f'split {split}: FGSM error ' + ', '.join(
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
    print('split  final error (%)')
    for k, e in zip(splits, errors):
        print(f'{k:>5}  {e:6.2f}')
    print(f'{opt.dataset} {opt.netType} {opt.learning}: {mean:.2f} +- {se:.2f} % '
          f'(mean +- standard error over {len(splits)} split{"s" * (len(splits) != 1)}; '
          f'{opt.nFolds} in the dataset)')
    summary = {'dataset': opt.dataset, 'netType': opt.netType, 'learning': opt.learning,
               'splits': splits, 'errors': errors, 'mean_error': mean, 'standard_error': se,
               'complete': len(splits) == opt.nFolds, 'settings': training.settings_of(opt)}
    fgsm = [results[k].get('fgsm') for k in splits]
    if all(fgsm):
        summary['fgsm_mean_error'] = {key: float(np.mean([f[key] for f in fgsm]))
                                      for key in fgsm[0]}
        print('FGSM, mean over splits: ' + ', '.join(
            f'{k} {v:.2f}%' for k, v in summary['fgsm_mean_error'].items()))
    utils.write_json(os.path.join(opt.save, name), summary)
    return summary


def main(argv=None):
    opt = opts.parse(argv)
    for line in opts.describe(opt):
        print(line)
    try:
        device, line = select_device(opt.gpu)
        if opt.nWorkers is None:
            opt.nWorkers = 0 if device.xp is np else min(8, os.cpu_count() or 1)
        print(f'{line}; {opt.nWorkers} data worker process(es)', flush=True)
        soundset = dataset.load_dataset(opt.data, opt.dataset, opt.fs, allow_pickle=opt.allowPickle)
        if opt.testOnly:
            results = run_test_only(opt, soundset, device)
            summarise(opt, results, 'summary_testOnly.json')
        else:
            results = run_training(opt, soundset, device)
            summarise(opt, results, 'summary.json')
        return 0
    except UserError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2
    except training.NonFiniteLossError as e:
        split_dir = os.path.join(opt.save, f'split{getattr(opt, "split_now", "?")}')
        snapshot = os.path.join(split_dir, 'snapshot.npz')
        kept = (f'the last good checkpoint is {snapshot} (epoch {e.epoch - 1})'
                if os.path.isfile(snapshot) else 'no checkpoint was written before it')
        print(f'{PROG}: error: training stopped: {e}; {kept}. Lower --LR or check the data.',
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f'\n{PROG}: interrupted; continue with the same command plus --resume',
              file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
