"""Build the UrbanSound8K dataset files (SPEC 2) from the official UrbanSound8K release.

Usage::

    python3 urbansound_gen.py DATA --source UrbanSound8K [--workers N] [--skipBad] [--folds K ...]
    python3 urbansound_gen.py --check DATA/urbansound8k/wav16.npz [...]

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
(``models.sample_rates()``), in the pickle-free format of :mod:`npzio`, each file written to a
temporary name and renamed.

Per clip (:mod:`audio_io`): decode with libsndfile (every WAV encoding of UrbanSound8K: 8-bit
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
import argparse
import collections
import csv
import io
import os
import sys
import time

import numpy as np
from tqdm import tqdm

import audio_io
import npzio
from utils import UserError

PROG = 'urbansound_gen.py'
DATASET = 'urbansound8k'
CSV_PATH = os.path.join('metadata', 'UrbanSound8K.csv')
N_FOLDS = 10
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
    """``UrbanSound8K.csv`` bytes -> list of Row; UserError naming file and line when malformed."""
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise UserError('%s: not UTF-8 text (%s)' % (csv_name, e)) from None
    reader = csv.DictReader(io.StringIO(text, newline=''))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError('%s line 1: missing column%s %s (header has: %s)'
                        % (csv_name, 's' if len(missing) > 1 else '', ', '.join(missing),
                           ', '.join(columns) or 'nothing'))
    rows, seen, names = [], {}, {}
    for rec in reader:
        line = reader.line_num
        where = '%s line %d' % (csv_name, line)
        if None in rec:
            raise UserError('%s: %d fields, more than the %d columns of the header'
                            % (where, len(columns) + len(rec[None]), len(columns)))
        if any(rec.get(c) is None for c in columns):
            raise UserError('%s: too few fields (%d of %d)'
                            % (where, sum(v is not None for v in rec.values()), len(columns)))
        filename = rec['slice_file_name'].strip()
        if not filename or '/' in filename or '\\' in filename or filename.startswith('.'):
            raise UserError('%s: bad slice_file_name %r' % (where, filename))
        if filename in seen:
            raise UserError('%s: duplicate row: %s already listed on line %d'
                            % (where, filename, seen[filename]))
        seen[filename] = line
        fold = audio_io.parse_int_field(rec['fold'], 'fold', where)
        if not 1 <= fold <= N_FOLDS:
            raise UserError('%s: unknown fold %d (UrbanSound8K has folds 1-%d)'
                            % (where, fold, N_FOLDS))
        label = audio_io.parse_int_field(rec['classID'], 'classID', where)
        if not 0 <= label < len(CLASSES):
            raise UserError('%s: classID must be in 0..%d, got %d'
                            % (where, len(CLASSES) - 1, label))
        category = rec['class'].strip()
        prev = names.setdefault(label, (category, line))
        if prev[0] != category:
            raise UserError('%s: classID %d is %r but %r on line %d'
                            % (where, label, category, prev[0], prev[1]))
        rows.append(Row(line, filename, fold, label, category))
    if not rows:
        raise UserError('%s: no rows' % csv_name)
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


def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 2 user error, 130 Ctrl-C)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Build DATA/urbansound8k/wav*.npz from the UrbanSound8K folder, '
                               'or check such a file (--check).')
    parser.add_argument('data', metavar='DATA', nargs='?',
                        help='output root (urbansound8k/ goes here)')
    parser.add_argument('--source', metavar='DIR',
                        help='the UrbanSound8K folder (metadata/UrbanSound8K.csv + '
                             'audio/fold1..10/); required: the dataset cannot be downloaded '
                             'without its form')
    parser.add_argument('--workers', type=int, default=audio_io.default_workers(), metavar='N',
                        help='conversion processes (default: %(default)s, the CPUs available; '
                             '1 converts in this process)')
    parser.add_argument('--skipBad', action='store_true',
                        help='skip missing, empty, truncated, unreadable or silent files, convert '
                             'the rest and list the skipped ones in DATA/urbansound8k/skipped.txt '
                             '(default: stop with exit status 2 and write nothing)')
    parser.add_argument('--folds', type=int, nargs='+', metavar='K',
                        help='build only these folds (a subset)')
    parser.add_argument('--check', nargs='+', metavar='NPZ',
                        help='print clip counts per fold and class and duration statistics of '
                             'generated files, and verify they load without pickle; no DATA')
    return audio_io.generator_main(
        PROG, parser, argv, lambda args: run(args.data, args.source, workers=args.workers,
                                             skip_bad=args.skipBad, folds=args.folds))



def run(data_dir, source=None, workers=None, skip_bad=False, folds=None):
    """Generate the files (module docstring); raises UserError / audio_io.BadFiles."""
    import models  # the registry says which rates are needed
    t0 = time.time()
    workers = audio_io.resolve_workers(workers)
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
    rates = [int(fs) for fs in models.sample_rates()]
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
    print('source: %s (%d rows); rates: %s Hz; no silence trimming'
          % (csv_name, len(rows), ', '.join(str(fs) for fs in rates)))
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

    items = [audio_io.Item(audio_io.ClipSource(os.path.join(root, 'audio', 'fold%d' % r.fold,
                                                            r.filename)),
                           'listed on %s line %d' % (csv_name, r.line)) for r in rows]
    out_dir = os.path.join(data_dir, DATASET)
    cache = audio_io.cache_root(data_dir, DATASET)
    t1 = time.time()
    paths, bads, n_cached = audio_io.plan(items, rates, cache, trim=False, skip_bad=skip_bad)
    for b in bads[:audio_io.MAX_LISTED]:
        print('%s: skipped %s' % (PROG, audio_io.bad_line(b)), file=sys.stderr)
    n_todo = sum(p is not None for p in paths) - n_cached
    print('%d clips: %d already converted (cache %s), %d to convert on %d worker%s'
          % (len(rows), n_cached, cache, n_todo, min(workers, max(n_todo, 1)),
             's' if min(workers, max(n_todo, 1)) > 1 else ''))
    t2 = time.time()
    bads += audio_io.convert_all(items, paths, rates, False, workers, skip_bad, cache, PROG)
    t3 = time.time()
    bad_idx = {id(b.item) for b in bads}
    good = [i for i, it in enumerate(items) if id(it) not in bad_idx]
    if not good:
        raise UserError('no clip could be converted (%d bad files)' % len(bads))
    good_rows = [rows[i] for i in good]
    for line in audio_io.describe(DATASET, good_rows, lambda r: r.label, names, N_FOLDS):
        print(line)

    audio_io.remove_stale_temps(out_dir)
    written = []
    for fs in rates:
        path = os.path.join(out_dir, 'wav%d.npz' % (fs // 1000))
        by_fold = {}
        for i in tqdm_rows(good, 'write %s' % os.path.basename(path)):
            sounds, labels = by_fold.setdefault(rows[i].fold, ([], []))
            sounds.append(audio_io.load_cached(paths[i], rates, fs))
            labels.append(rows[i].label)
        fold_data = {k: (s, np.asarray(lab, dtype=np.int32)) for k, (s, lab) in
                     sorted(by_fold.items())}
        try:
            npzio.save_sound_npz(path, fold_data, fs, names)
        except OSError as e:
            raise UserError('%s: cannot write (%s)' % (path, e)) from None
        lengths = np.array([len(c) for s, _ in fold_data.values() for c in s])
        written.append('  %s  %d Hz, %d clips (%s), %.1f to %.1f s, %.1f MB'
                       % (path, fs, len(lengths), ' '.join('fold%d:%d' % (k, len(s))
                                                           for k, (s, _) in fold_data.items()),
                          lengths.min() / fs, lengths.max() / fs, os.path.getsize(path) / 1e6))
        del by_fold, fold_data
    report = os.path.join(out_dir, 'skipped.txt')
    audio_io.write_report(report, PROG, bads, len(rows))
    audio_io.remove_cache(data_dir, DATASET)
    print('wrote:')
    for line in written:
        print(line)
    audio_io.print_skipped(PROG, bads, [report])
    t4 = time.time()
    print('done in %.1f s (check %.1f s, convert %.1f s, write %.1f s)'
          % (t4 - t0, t2 - t1, t3 - t2, t4 - t3))
    return 0


def tqdm_rows(indices, desc):
    """Progress bar over the clips while one file is assembled (shown for large datasets)."""
    return tqdm(indices, desc=desc, unit='clip', file=sys.stderr, leave=False,
                disable=len(indices) < 200)


if __name__ == '__main__':
    sys.exit(main())
