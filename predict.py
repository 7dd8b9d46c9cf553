"""Classify audio files with a trained model: the K most probable classes of each file.

    .venv/bin/python predict.py RUN_DIR_OR_MODEL FILE_OR_DIR... [--top K] [--json] [--gpu G]

``RUN_DIR_OR_MODEL`` is a split folder of ``main.py`` (``--save``/split{k}), its ``model.npz``, or
a ``--save`` folder holding one trained split. The network, its sample rate and input length, the
number of test crops, the test batch size, the dataset (whether clips are trimmed) and the class
names come from the split's run record (``record.json``), so no flag that training knew is asked
again; for a run from before run records, ``run.json`` gives the settings and the classes are
named ``class0``, ``class1``...

Each file is read and converted as the dataset generators convert theirs (docs/method.md §2.2,
``datagen.audio.load_clip``: libsndfile, mean over channels, polyphase resampling to the network's
rate, int16, and for ESC-50/ESC-10 the leading and trailing digital silence trimmed), then
classified by the 10-crop test of docs/method.md §3.2 through the code ``main.py`` tests with
(``training.test_iterator`` and ``evaluation.ten_crop_batches``): nCrops crops at equal strides of
the clip zero-padded by T/2 at each end, the softmax averaged over the crops. A clip shorter than
the network's input T is padded, a longer one is covered by the crops, exactly as in the test.
Run on the clips of a split's test fold, it gives the predictions, hence the error, of
``main.py --testOnly``.

Arguments that are folders are searched recursively for audio files (the extensions libsndfile
reads, hidden files left out), sorted by path; files are classified in batches of the run's
``--testBatchSize`` clips, with a progress bar on a terminal.

Output (stdout), one line per file in input order: ``FILE: class p, class p, ...``, the top K
(default 3) classes with their probabilities (the averaged softmax). ``--json``: one JSON object
per line instead, ``{"file", "top": [{"class", "label", "probability"}, ...], "seconds",
"crops"}`` (``seconds``: the converted clip's duration), or ``{"file", "error"}`` for a bad file.

Errors: a bad file (missing, empty, truncated, not audio, silent) gets one line
``predict.py: error: FILE: REASON; ...`` on stderr and the other files go on; the exit status is
then 2 (0 when every file was classified). A bad run folder, model or flag stops before any file
with one such line and status 2. Warnings (stderr) name each way the code or the library versions
differ from the run record. Nothing is written.
"""
import json
import os
import sys
import types

import blasenv  # noqa: F401  (before NumPy: OpenBLAS thread timeout)
import allocator  # noqa: F401  (glibc keeps freed memory for the next step)
import numpy as np

import compat  # noqa: F401
import chainer

import evaluation
import models
import runrecord
import runtime
import training
import utils
from datagen import audio, registry
from utils import UserError

PROG = 'predict.py'
# File name extensions searched for in folders: the formats libsndfile reads, and their aliases.
AUDIO_EXTENSIONS = {'.wav', '.wave', '.flac', '.ogg', '.oga', '.opus', '.aif', '.aiff', '.aifc',
                    '.au', '.snd', '.caf', '.w64', '.rf64', '.mp3'}


class Run:
    """A trained split as ``predict.py`` needs it, read from its records (:func:`load_run`).

    Attributes: ``split_dir``, ``model_path``; ``net_type``, ``n_classes``, ``fs`` (Hz),
    ``input_length`` (T, samples), ``n_crops``, ``batch_size`` (clips per test batch),
    ``dataset``, ``trim`` (bool), ``class_names`` (list of C str); ``record`` (the record.json
    dict, or None for a run from before run records); ``notes`` (warning lines).
    """

    def __init__(self, split_dir, model_path, settings, class_names, trim, record, notes):
        self.split_dir, self.model_path = split_dir, model_path
        self.net_type = settings['netType']
        self.n_classes = int(settings['nClasses'])
        self.fs = int(settings['fs'])
        self.input_length = int(settings['inputLength'])
        self.n_crops = int(settings.get('nCrops') or 10)
        self.batch_size = int(settings.get('testBatchSize') or 8)
        self.dataset = settings['dataset']
        self.class_names, self.trim = list(class_names), bool(trim)
        self.record, self.notes = record, notes


def find_split(path):
    """(split folder, model file) named by ``path``: a model .npz, a split folder holding
    model.npz, or a ``--save`` folder with exactly one trained split. Raises UserError."""
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), path
    if not os.path.isdir(path):
        raise UserError(f'{path}: no such file or folder; name a split folder of main.py '
                        f'(--save/splitK) or its model.npz')
    model = os.path.join(path, 'model.npz')
    if os.path.isfile(model):
        return path, model
    trained = sorted((d for d in os.listdir(path) if d.startswith('split')
                      and os.path.isfile(os.path.join(path, d, 'model.npz'))),
                     key=lambda d: (len(d), d))
    if len(trained) == 1:
        return os.path.join(path, trained[0]), os.path.join(path, trained[0], 'model.npz')
    if trained:
        raise UserError(f'{path}: holds {len(trained)} trained splits ({", ".join(trained)}); '
                        f'name one, e.g. {os.path.join(path, trained[0])}')
    raise UserError(f'{path}: no model.npz here or in a split*/ folder below it; train it with '
                    f'main.py first, or name the split folder of a finished run')


def load_run(path):
    """The :class:`Run` named by ``path`` (see :func:`find_split`), from its record.json, else
    its run.json. Raises UserError for a missing or damaged record, or settings the code no
    longer has (an unknown network, another rate or input length than the network's now)."""
    split_dir, model_path = find_split(path)
    record = runrecord.read_run_record(split_dir)
    notes = []
    if record is not None:
        source = os.path.join(split_dir, runrecord.RECORD_FILE)
        settings = record.get('options') or {}
        names = record.get('class_names')
        trim = (record.get('data') or {}).get('trim')
    else:
        source = os.path.join(split_dir, 'run.json')
        if not os.path.isfile(source):
            raise UserError(f'{split_dir}: neither {runrecord.RECORD_FILE} nor run.json; name '
                            f'the split folder that main.py wrote')
        settings = utils.read_json_object(source, 'restore it, or retrain the split').get(
            'settings') or {}
        names, trim = None, None
        notes.append(f'{split_dir}: no {runrecord.RECORD_FILE} (a run from before run records): '
                     f'class names unknown, shown as class0, class1, ...')
    missing = [k for k in ('netType', 'nClasses', 'fs', 'inputLength', 'dataset')
               if settings.get(k) is None]
    if missing:
        raise UserError(f'{source}: lacks {", ".join(missing)}; restore it, or retrain the split')
    net = models.archs.get(settings['netType'])
    if net is None:
        raise UserError(f'{source}: network {settings["netType"]!r} is not in this code '
                        f'(models.archs has {", ".join(sorted(models.archs))})')
    for key, now in (('fs', net.fs), ('inputLength', net.input_length)):
        if int(settings[key]) != int(now):
            raise UserError(f'{source}: {key} {settings[key]} when trained, {now} in '
                            f'{settings["netType"]} now; predict with the code the model was '
                            f'trained with')
    if names is None:
        names = [f'class{k}' for k in range(int(settings['nClasses']))]
    if len(names) != int(settings['nClasses']):
        raise UserError(f'{source}: {len(names)} class names for {settings["nClasses"]} '
                        f'classes; restore it, or retrain the split')
    if trim is None:
        trim = registry.get(settings['dataset']).trim
    return Run(split_dir, model_path, settings, names, trim, record, notes)


def load_model(run, device):
    """The network of ``run`` with its trained weights, on ``device``; UserError if the file is
    not that network's weights."""
    model = models.archs[run.net_type](run.n_classes)
    try:
        chainer.serializers.load_npz(run.model_path, model)
    except Exception as e:  # not a model file, or another network's
        raise UserError(f'{run.model_path}: not the weights of {run.net_type} with '
                        f'{run.n_classes} classes ({type(e).__name__}: {e}); name the model.npz '
                        f'of a finished split') from None
    model.to_device(device)
    return model


def audio_files(paths):
    """The files to classify, in order: each argument that is a file (or does not exist: it is
    reported as missing later) as given; each folder's audio files (:data:`AUDIO_EXTENSIONS`,
    recursively, hidden files and folders left out), sorted; a folder without any stays in the
    list, to be reported in its place."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            found += [os.path.join(root, n) for n in names if not n.startswith('.')
                      and os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS]
        files += sorted(found) or [path]
    return files


def read_clip(path, run):
    """``path`` as a clip of ``run`` (:func:`datagen.audio.load_clip`). Raises BadAudio with
    the reason and what to do, for a bad file or a folder (an argument without audio files)."""
    if os.path.isdir(path):
        raise audio.BadAudio(f'no audio files in this folder (looked for '
                             f'{", ".join(sorted(AUDIO_EXTENSIONS))}); name the files instead')
    try:
        return audio.load_clip(path, run.fs, run.trim)
    except audio.BadAudio as e:
        raise audio.BadAudio(f'{e}; skipped (fix or remove the file; the others go on)') from None


def classify(model, clips, run, device):
    """The averaged crop probabilities of ``clips`` (int16 clips at ``run.fs``): a float64 NumPy
    array (len(clips), C), rows summing to 1, by the 10-crop test of main.py (docs/method.md §3.2)
    with ``run.n_crops`` crops in batches of ``run.batch_size`` clips."""
    opt = types.SimpleNamespace(inputLength=run.input_length, nCrops=run.n_crops,
                                testBatchSize=run.batch_size)
    iterator = training.test_iterator(opt, list(clips), np.zeros(len(clips), np.int32))
    cpu = chainer.backend.CpuDevice()
    out = [cpu.send(prob).astype(np.float64) for prob, _ in evaluation.ten_crop_batches(
        model, iterator, chainer.dataset.concat_examples, device)]
    return np.concatenate(out) if out else np.zeros((0, run.n_classes))


def top_classes(prob, names, k):
    """The ``k`` most probable classes of one probability row: [(label, name, p)], most probable
    first (ties by label)."""
    order = sorted(range(len(prob)), key=lambda c: (-prob[c], c))[:k]
    return [(c, names[c], float(prob[c])) for c in order]


def format_line(path, top, as_json, seconds=None, crops=None):
    """One output line for a classified file (text or JSON, see the module docstring)."""
    if as_json:
        return json.dumps({'file': path, 'top': [{'class': n, 'label': c, 'probability': p}
                                                 for c, n, p in top],
                           'seconds': seconds, 'crops': crops})
    return f'{path}: ' + ', '.join(f'{n} {p:.3f}' for _, n, p in top)


def predict(run, model, files, device, top, as_json, out=None):
    """Classify ``files`` (paths) in batches and print a line each, in their order; returns the
    number of bad files.

    A file that cannot be read or converted (``datagen.audio.BadAudio``) gets its error line on
    stderr (and, with ``as_json``, a JSON error object in its place on ``out``) and is skipped.
    """
    out = out or sys.stdout
    bad = 0
    with utils.progress(total=len(files), desc='predict', unit='file') as bar:
        for start in range(0, len(files), run.batch_size):
            batch, clips = files[start:start + run.batch_size], []
            for path in batch:
                try:
                    clips.append(read_clip(path, run))
                except audio.BadAudio as e:
                    clips.append(e)
            probabilities = iter(classify(
                model, [c for c in clips if not isinstance(c, audio.BadAudio)], run, device))
            for path, clip in zip(batch, clips):
                if isinstance(clip, audio.BadAudio):
                    bad += 1
                    bar.write(f'{PROG}: error: {path}: {clip}', file=sys.stderr)
                    if as_json:
                        bar.write(json.dumps({'file': path, 'error': str(clip)}), file=out)
                    continue
                top_k = top_classes(next(probabilities), run.class_names, top)
                bar.write(format_line(path, top_k, as_json, round(len(clip) / run.fs, 3),
                                      run.n_crops), file=out)
            bar.update(len(batch))
    return bad


def build_parser():
    """The command-line parser of predict.py (errors in one line, ``utils.OneLineParser``)."""
    p = utils.OneLineParser(
        prog=PROG, description=__doc__.split('\n\n')[0],
        epilog='example: .venv/bin/python predict.py results/esc10-envnetv2-intermix/split1 '
               'dog.wav recordings/ --top 3')
    p.add_argument('run', metavar='RUN_DIR_OR_MODEL',
                   help='a split folder of main.py (--save/splitK), its model.npz, or a --save '
                        'folder with one trained split')
    p.add_argument('inputs', metavar='FILE_OR_DIR', nargs='+',
                   help='audio files, or folders searched recursively for them')
    p.add_argument('--top', type=int, default=3, metavar='K',
                   help='classes shown per file, most probable first (default 3)')
    p.add_argument('--json', action='store_true',
                   help='one JSON object per line instead of text')
    p.add_argument('--gpu', type=int, default=None,
                   help='GPU id; -1 for the CPU (default: GPU 0 if CuPy sees one, else CPU)')
    return p


def main(argv=None):
    """Command-line entry point (module docstring). Returns the exit status: 0 every file
    classified, 2 a bad file (the others classified) or a bad run folder, model or flag."""
    args = build_parser().parse_args(argv)
    try:
        if args.top < 1:
            raise UserError(f'--top {args.top}: must be at least 1')
        run = load_run(args.run)
        for line in run.notes:
            print(f'{PROG}: warning: {line}', file=sys.stderr)
        if run.record is not None:
            for line in runrecord.record_differences(run.record):
                print(f'{PROG}: warning: {line}', file=sys.stderr)
        device, _ = runtime.select_device(args.gpu)  # the device choice of main.py (--gpu)
        model = load_model(run, device)
    except UserError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2
    files = audio_files(args.inputs)
    bad = predict(run, model, files, device, min(args.top, run.n_classes), args.json)
    return 2 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
