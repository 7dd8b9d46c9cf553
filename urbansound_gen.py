"""Build the UrbanSound8K dataset files (docs/method.md §2) from the official UrbanSound8K release.

Usage::

    .venv/bin/python urbansound_gen.py DATA --source UrbanSound8K [--workers N] [--skipBad] \
        [--folds K ...]
    .venv/bin/python urbansound_gen.py --check DATA/urbansound8k/wav16.npz [...]

``--source`` is the UrbanSound8K folder: ``metadata/UrbanSound8K.csv`` and
``audio/fold1/`` .. ``audio/fold10/`` (a folder holding a single ``UrbanSound8K/`` with that
layout is accepted too). The dataset is distributed only after a form on its web site, so it is
never downloaded: without ``--source`` the run stops with a message naming ``--source``.

The CSV (columns ``slice_file_name,fsID,start,end,salience,fold,classID,class``; this program
needs ``slice_file_name``, ``fold``, ``classID`` and ``class``) is authoritative for fold and label:
a row's file is read from ``audio/fold{fold}/{slice_file_name}``, its label is ``classID`` (0-9)
and the class names come from the ``class`` column (the official name for a class absent from the
CSV). A CSV with a missing column, a row with too few or too many fields, a fold outside 1-10, a
classID outside 0-9, one classID with two class names, or a file listed twice is refused with its
line number (the header is line 1). Within a fold, clips keep the CSV order. ``--folds`` builds
only the folds named; a CSV without some folds, or ``--folds``, gives a subset, which is reported
(folds and classes present), as ``esc_gen.py`` reports ESC-50 subsets.

Writes ``DATA/urbansound8k/wav{fs//1000}.npz`` for every sample rate a registered network needs
(``models.sample_rates()``), in the pickle-free format of :mod:`datagen.npzio`, each file written to a
temporary name and renamed.

Per clip (:mod:`datagen.audio`): decode with libsndfile (every WAV encoding of UrbanSound8K: 8-bit
unsigned, 16/24/32-bit integer, 32-bit float, IMA/MS ADPCM, mono or stereo, 8-96 kHz,
WAVE_FORMAT_EXTENSIBLE), mean over channels, polyphase resampling, int16. **No silence trimming**:
the BC-learning reference trims ESC clips but keeps UrbanSound8K clips whole, and so does this
program, so a clip of d seconds has round(d * fs) samples (+-1).

Clips are converted in parallel (``--workers``, default: every CPU this process may use) and
cached in ``DATA/.cache/urbansound8k/`` as they finish, so an interrupted run (Ctrl-C, kill -9,
a crash) loses no finished clip: the next run converts only the rest. The cache is removed once
every file is written.

Bad input: a file that is missing, empty, truncated, not audio, or all-zero (silent) is named with
its reason on one line ``urbansound_gen.py: error: FILE: REASON (listed on CSV line N)``. Without
``--skipBad`` the run stops with exit status 2 and writes no dataset file (a problem found without
decoding, i.e. all but silence and decoding errors, is caught before anything is written; one
found while converting stops the run, and the clips converted so far stay in the cache for the
rerun). With ``--skipBad`` the other clips are converted and ``DATA/urbansound8k/skipped.txt``
lists each skipped file and why (a later run that skips nothing removes it).

``--check FILE`` prints the clip count per fold and class and duration statistics of a generated
file and verifies that it loads without pickle.
"""
import collections
import os
import sys

from datagen import audio, pipeline, registry
from datagen.convert import Item
from utils import UserError

PROG = 'urbansound_gen.py'
DATASET = 'urbansound8k'
CSV_PATH = os.path.join('metadata', 'UrbanSound8K.csv')
N_FOLDS = registry.get(DATASET).n_folds
REQUIRED_COLUMNS = ('slice_file_name', 'fold', 'classID', 'class')
CLASSES = ('air_conditioner', 'car_horn', 'children_playing', 'dog_bark', 'drilling',
           'engine_idling', 'gun_shot', 'jackhammer', 'siren', 'street_music')

Row = collections.namedtuple('Row', 'line filename fold label category')


def find_root(path):
    """The UrbanSound8K folder given as --source (or the one folder inside it holding one)."""
    if not os.path.exists(path):
        raise UserError('--source %s: no such directory' % path)
    if not os.path.isdir(path):
        raise UserError('--source %s: not a directory (expected the UrbanSound8K folder holding '
                        'metadata/UrbanSound8K.csv and audio/fold1..10)' % path)
    if os.path.isfile(os.path.join(path, CSV_PATH)):
        return path
    subs = [d for d in sorted(os.listdir(path)) if os.path.isfile(os.path.join(path, d, CSV_PATH))]
    if len(subs) == 1:
        return os.path.join(path, subs[0])
    raise UserError('%s: no such file (is --source %s the UrbanSound8K folder?)'
                    % (os.path.join(path, CSV_PATH), path))


def parse_csv(data, csv_name):
    """``UrbanSound8K.csv`` bytes -> list of Row; UserError naming file and line when malformed.

    Besides :func:`datagen.pipeline.read_csv`'s checks: fold in 1-10, classID in 0-9, one class
    name per classID.
    """
    rows, names = [], {}
    for line, where, rec in pipeline.read_csv(data, csv_name, REQUIRED_COLUMNS,
                                              'slice_file_name'):
        fold = pipeline.check_fold(pipeline.parse_int_field(rec['fold'], 'fold', where),
                                   DATASET, where)
        label = pipeline.parse_int_field(rec['classID'], 'classID', where)
        if not 0 <= label < len(CLASSES):
            raise UserError('%s: classID must be in 0..%d, got %d'
                            % (where, len(CLASSES) - 1, label))
        category = rec['class'].strip()
        pipeline.check_class_name(names, label, category, line, where, 'classID')
        rows.append(Row(line, rec['slice_file_name'], fold, label, category))
    return rows


def class_names(rows):
    """Class names indexed by classID: the CSV's ``class``, the official name when absent."""
    names = list(CLASSES)
    for r in rows:
        names[r.label] = r.category
    return names


def label_mismatches(rows):
    """Rows whose file name ``fsID-classID-occurrence-slice.wav`` names another classID."""
    out = []
    for r in rows:
        parts = os.path.splitext(r.filename)[0].split('-')
        if len(parts) == 4 and parts[1].isdigit() and int(parts[1]) != r.label:
            out.append(r)
    return out


SOURCE_HELP = ('the UrbanSound8K folder (metadata/UrbanSound8K.csv + audio/fold1..10/); '
               'required: the dataset cannot be downloaded without its form')


def main(argv=None):
    """Command-line entry point (module docstring); ``argv`` None reads ``sys.argv``.

    Returns the exit status: 0 done, 2 a user error or bad input (one line per problem on stderr),
    130 Ctrl-C (the clips converted so far stay cached for the rerun).
    """
    parser = pipeline.make_parser(PROG, (DATASET,), SOURCE_HELP)
    parser.add_argument('--folds', type=int, nargs='+', metavar='K',
                        help='build only these folds (a subset)')
    return pipeline.generator_main(
        PROG, parser, argv, lambda args: run(args.data, args.source, workers=args.workers,
                                             skip_bad=args.skipBad, folds=args.folds))


def run(data_dir, source=None, workers=None, skip_bad=False, folds=None):
    """Generate the files (module docstring); raises UserError / BadFiles."""
    workers = pipeline.resolve_workers(workers)
    if folds is not None:
        bad = [k for k in folds if not 1 <= k <= N_FOLDS]
        if bad:
            raise UserError('--folds: UrbanSound8K has folds 1-%d, got %s'
                            % (N_FOLDS, ' '.join(map(str, bad))))
    if source is None:
        raise UserError('no --source: UrbanSound8K cannot be downloaded by this program (its '
                        'site asks for a form); download and extract it, then pass --source '
                        'PATH/UrbanSound8K')
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError('DATA %s: exists and is not a directory' % data_dir)
    root = find_root(source)
    csv_name = os.path.join(root, CSV_PATH)
    try:
        with open(csv_name, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise UserError('%s: cannot read (%s)' % (csv_name, e)) from None
    rows = parse_csv(data, csv_name)
    names = class_names(rows)
    if folds is not None:
        absent = sorted(set(folds) - {r.fold for r in rows})
        if absent:
            raise UserError('--folds: fold%s %s not in %s'
                            % ('s' if len(absent) > 1 else '', ' '.join(map(str, absent)),
                               csv_name))
        rows = [r for r in rows if r.fold in set(folds)]
    mism = label_mismatches(rows)
    if mism:
        print('%s: warning: %d rows have a file name whose classID part differs from the CSV '
              'classID (the CSV is used), e.g. %s line %d: %s has classID %d'
              % (PROG, len(mism), csv_name, mism[0].line, mism[0].filename, mism[0].label),
              file=sys.stderr)

    # A whole fold folder missing is one message, not one per file.
    absent_dirs = sorted({r.fold for r in rows
                          if not os.path.isdir(os.path.join(root, 'audio', 'fold%d' % r.fold))})
    if absent_dirs and not skip_bad:
        counts = collections.Counter(r.fold for r in rows)
        raise UserError('%s: no such director%s (%s CSV rows); restore %s, or build the other '
                        'folds with --folds or --skipBad'
                        % (', '.join(os.path.join(root, 'audio', 'fold%d' % k)
                                     for k in absent_dirs),
                           'ies' if len(absent_dirs) > 1 else 'y',
                           ' + '.join('%d' % counts[k] for k in absent_dirs),
                           'them' if len(absent_dirs) > 1 else 'it'))

    items = [Item(audio.ClipSource(os.path.join(root, 'audio', 'fold%d' % r.fold, r.filename)),
                  'listed on %s line %d' % (csv_name, r.line)) for r in rows]
    outputs = [pipeline.Output(DATASET, lambda r: True, lambda r: r.label, names, 'rows')]
    return pipeline.generate(PROG, data_dir, csv_name, DATASET, rows, items, outputs,
                             trim=registry.get(DATASET).trim, workers=workers, skip_bad=skip_bad)


if __name__ == '__main__':
    sys.exit(main())
