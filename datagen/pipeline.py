"""The generation pipeline every dataset generator calls (docs/method.md §2, §10).

A generator entry point (``esc_gen.py``, ``urbansound_gen.py``) knows its source layout, parses
its CSV into rows and describes its datasets as :class:`Output` rows; everything after that is
here and shared:

1. :func:`make_parser`: the command line every generator has (``DATA``, ``--source``,
   ``--workers``, ``--skipBad``, ``--check``), to which an entry point adds its own options;
   :func:`generator_main` dispatches ``--check`` or a run and turns errors into one line and an
   exit status (:func:`cli`).
2. :func:`read_csv`: the metadata CSV, decoded and checked (required columns, field counts, file
   names, duplicates), each row with its line number; :func:`parse_int_field` for its integers.
3. :func:`generate`: probe every file (:func:`datagen.convert.plan`), convert what the cache
   lacks in parallel (:func:`datagen.convert.convert_all`), describe each dataset (classes,
   folds, clip counts), write ``DATA/{dataset}/wav{fs//1000}.npz`` for every rate a registered
   network needs (:mod:`datagen.npzio`, atomically), write or remove the ``--skipBad`` report,
   remove the cache, and report what was written and how long each phase took.

A new dataset is one entry point (its source layout, CSV columns and classes, a list of
:class:`Output`) plus one row in :data:`datagen.registry.DATASETS`.
"""
import collections
import csv
import io
import os
import re
import sys
import time

import numpy as np

import utils
from datagen import convert, npzio, registry
from datagen.npzio import one_line
from utils import UserError, atomic_write

# --------------------------------------------------------------------------------------------
# Metadata CSV


def parse_int_field(text, column, where):
    """The integer in a CSV field (surrounding blanks allowed) of the generators' metadata.

    Raises UserError '<where>: <column> must be an integer, got <text>' otherwise.
    """
    try:
        return int(text.strip())
    except ValueError:
        raise UserError('%s: %s must be an integer, got %r' % (where, column, text)) from None



def read_csv(data, csv_name, required, filename_column):
    """Decode and check a metadata CSV; yields ``(line, where, record)`` per data row.

    Args:
        data (bytes): the CSV file's content (UTF-8, a byte-order mark allowed).
        csv_name (str): its name in messages.
        required (sequence of str): columns that must be present (blanks around header names are
            ignored).
        filename_column (str): the column naming each row's audio file; it must be a bare file
            name (no folder, not hidden) and appear once in the file.

    ``line`` is the row's line number (the header is line 1), ``where`` the text ``"<csv_name>
    line <line>"`` for messages, and ``record`` a dict column -> text with the file name
    stripped of blanks. Raises UserError naming the file and line for text that is not UTF-8, a
    missing column, a row with too few or too many fields, a bad or repeated file name, and a
    file without rows.
    """
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise UserError('%s: not UTF-8 text (%s)' % (csv_name, e)) from None
    reader = csv.DictReader(io.StringIO(text, newline=''))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    missing = [c for c in required if c not in columns]
    if missing:
        raise UserError('%s line 1: missing column%s %s (header has: %s)'
                        % (csv_name, 's' if len(missing) > 1 else '', ', '.join(missing),
                           ', '.join(columns) or 'nothing'))
    seen = {}
    n_rows = 0
    for rec in reader:
        line = reader.line_num
        where = '%s line %d' % (csv_name, line)
        if None in rec:
            raise UserError('%s: %d fields, more than the %d columns of the header'
                            % (where, len(columns) + len(rec[None]), len(columns)))
        if any(rec.get(c) is None for c in columns):
            raise UserError('%s: too few fields (%d of %d)'
                            % (where, sum(v is not None for v in rec.values()), len(columns)))
        filename = rec[filename_column].strip()
        if not filename or '/' in filename or '\\' in filename or filename.startswith('.'):
            raise UserError('%s: bad %s %r' % (where, filename_column, filename))
        if filename in seen:
            raise UserError('%s: duplicate row: %s already listed on line %d'
                            % (where, filename, seen[filename]))
        seen[filename] = line
        rec[filename_column] = filename
        n_rows += 1
        yield line, where, rec
    if not n_rows:
        raise UserError('%s: no rows' % csv_name)


def check_fold(fold, dataset, where):
    """``fold`` if the registry's ``dataset`` has it (1..n_folds), else UserError naming ``where``."""
    n_folds = registry.get(dataset).n_folds
    if not 1 <= fold <= n_folds:
        raise UserError('%s: unknown fold %d (%s has folds 1-%d)'
                        % (where, fold, registry.get(dataset).title, n_folds))
    return fold


def check_class_name(names, label, category, line, where, column):
    """Record ``category`` as the name of ``label``; UserError if ``label`` already has another.

    ``names`` maps label -> (category, line) and is updated in place.
    """
    prev = names.setdefault(label, (category, line))
    if prev[0] != category:
        raise UserError('%s: %s %d is %r but %r on line %d'
                        % (where, column, label, category, prev[0], prev[1]))


# --------------------------------------------------------------------------------------------
# Generation


Output = collections.namedtuple('Output', 'name member label_of class_names what')
Output.__doc__ = """One dataset a generator run writes.

name: its name in :data:`datagen.registry.DATASETS` (the folder under DATA);
member(row) -> bool: whether a CSV row belongs to it;
label_of(row) -> int: the row's label in it;
class_names: its class names, indexed by label;
what: the rows it takes, for the message when none was converted (e.g. 'rows with esc10=True').
"""


def build_folds(rows, clips, label_of):
    """{fold: (clips, int32 labels)} for ``rows`` (CSV order kept within each fold)."""
    folds = {}
    for r, clip in zip(rows, clips):
        sounds, labels = folds.setdefault(r.fold, ([], []))
        sounds.append(clip)
        labels.append(label_of(r))
    return {k: (s, np.asarray(lab, dtype=np.int32)) for k, (s, lab) in sorted(folds.items())}


def generate(prog, data_dir, source_name, cache_name, rows, items, outputs, trim, workers,
             skip_bad):
    """Convert the clips of ``items`` and write every dataset of ``outputs`` (module docstring).

    Args:
        prog (str): the program name for messages (``esc_gen.py``).
        data_dir (str): ``DATA``; dataset ``name`` goes to ``DATA/name/wav{fs//1000}.npz``.
        source_name (str): the CSV read, for the first line printed.
        cache_name (str): the cache folder ``DATA/.cache/<cache_name>`` (shared by the outputs).
        rows (list): the CSV rows (each with ``.fold``), one per item.
        items (list of datagen.convert.Item): the audio file of each row.
        outputs (list of Output): the datasets to write; the first must take every row.
        trim (bool): trim leading and trailing digital silence (ESC) or keep clips whole.
        workers (int): conversion processes (1: in this process).
        skip_bad (bool): skip bad files and list them in ``DATA/name/skipped.txt`` instead of
            stopping.

    Returns 0. Raises UserError (bad input, unwritable output), datagen.convert.BadFiles (bad
    files without ``skip_bad``) or datagen.convert.Interrupted (Ctrl-C); the dataset files are
    then unchanged and the clips converted so far stay in the cache for the rerun.
    """
    import models  # the network registry says which rates are needed (imports Chainer)
    t0 = time.time()
    rates = [int(fs) for fs in models.sample_rates()]
    print('source: %s (%d rows); rates: %s Hz%s'
          % (source_name, len(rows), ', '.join(str(fs) for fs in rates),
             '' if trim else '; no silence trimming'))
    cache = convert.cache_root(data_dir, cache_name)
    t1 = time.time()
    paths, bads, n_cached = convert.plan(items, rates, cache, trim=trim, skip_bad=skip_bad)
    for b in bads[:convert.MAX_LISTED]:
        print('%s: skipped %s' % (prog, convert.bad_line(b)), file=sys.stderr)
    n_todo = sum(p is not None for p in paths) - n_cached
    n_workers = min(workers, max(n_todo, 1))
    print('%d clips: %d already converted (cache %s), %d to convert on %d worker%s'
          % (len(rows), n_cached, cache, n_todo, n_workers, 's' if n_workers > 1 else ''))
    t2 = time.time()
    bads += convert.convert_all(items, paths, rates, trim, workers, skip_bad, cache, prog)
    t3 = time.time()
    bad_idx = {id(b.item) for b in bads}
    good = [i for i, it in enumerate(items) if id(it) not in bad_idx]
    if not good:
        raise UserError('no clip could be converted (%d bad files)' % len(bads))

    todo = []  # (output, indices of its good rows)
    for out in outputs:
        idx = [i for i in good if out.member(rows[i])]
        if idx:
            todo.append((out, idx))
        else:
            print('%s: no %s; %s not written' % (out.name, out.what,
                                                 os.path.join(data_dir, out.name)))
    for out, idx in todo:
        for line in describe(out.name, [rows[i] for i in idx], out.label_of, out.class_names,
                             registry.get(out.name).n_folds):
            print(line)
        remove_stale_temps(os.path.join(data_dir, out.name))

    written = []
    for fs in rates:
        clips = {i: convert.load_cached(paths[i], rates, fs)
                 for i in utils.progress(good, desc='read %d Hz' % fs, unit='clip', leave=False,
                                         disable=len(good) < 200)}
        for out, idx in todo:
            path = os.path.join(data_dir, out.name, 'wav%d.npz' % (fs // 1000))
            folds = build_folds([rows[i] for i in idx], [clips[i] for i in idx], out.label_of)
            try:
                npzio.save_sound_npz(path, folds, fs, out.class_names)
            except OSError as e:
                raise UserError('%s: cannot write (%s)' % (path, e)) from None
            lengths = np.array([len(c) for s, _ in folds.values() for c in s])
            written.append('  %s  %d Hz, %d clips (%s), %.1f to %.1f s, %.1f MB'
                           % (path, fs, len(lengths),
                              ' '.join('fold%d:%d' % (k, len(s)) for k, (s, _) in folds.items()),
                              lengths.min() / fs, lengths.max() / fs,
                              os.path.getsize(path) / 1e6))
        del clips
    row_of = {id(it): r for it, r in zip(items, rows)}
    reports = []
    for out, _ in todo:
        report = os.path.join(data_dir, out.name, 'skipped.txt')
        mine = [b for b in bads if out.member(row_of[id(b.item)])]
        write_report(report, prog, mine, sum(1 for r in rows if out.member(r)))
        if mine:
            reports.append(report)
    convert.remove_cache(data_dir, cache_name)
    print('wrote:')
    for line in sorted(written):
        print(line)
    print_skipped(prog, bads, reports)
    t4 = time.time()
    print('done in %.1f s (check %.1f s, convert %.1f s, write %.1f s)'
          % (t4 - t0, t2 - t1, t3 - t2, t4 - t3))
    return 0


# --------------------------------------------------------------------------------------------
# Reports


_TEMP = re.compile(r'^\.(wav\d+\.npz|skipped\.txt)\..*\.tmp(\.npz)?$')


def remove_stale_temps(directory):
    """Delete temporary files an earlier run killed while writing left in ``directory``."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if _TEMP.match(name):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def write_report(path, prog, bads, n_listed):
    """Write the ``--skipBad`` report (tab-separated: file, where, reason); remove it if no bads."""
    if not bads:
        if os.path.exists(path):
            os.remove(path)
        return

    def write(tmp):
        with open(tmp, 'w') as f:
            f.write('# %s --skipBad: %d of %d listed files skipped (not in the .npz files)\n'
                    % (prog, len(bads), n_listed))
            f.write('# file\twhere\treason\n')
            for b in bads:
                f.write('%s\t%s\t%s\n' % (b.item.src.display, b.item.where, b.reason))
    atomic_write(path, write)


def print_skipped(prog, bads, reports):
    """Print the skipped files (at most MAX_LISTED) and where the reports are, to stderr."""
    if not bads:
        return
    print('%s: %d file%s skipped (--skipBad); listed in %s'
          % (prog, len(bads), 's' if len(bads) > 1 else '', ', '.join(reports)), file=sys.stderr)


def describe(name, rows, label_of, class_names, n_folds=None):
    """Lines reporting the classes, folds and clip counts of one dataset (rows have ``.fold``)."""
    labels = sorted({label_of(r) for r in rows})
    per_fold = collections.Counter(r.fold for r in rows)
    lines = ['%s: %d clips, %d of %d classes, folds %s'
             % (name, len(rows), len(labels), len(class_names),
                ' '.join('%d:%d' % (k, per_fold[k]) for k in sorted(per_fold)))]
    if n_folds is not None and len(per_fold) < n_folds:
        lines.append('  subset: %d of %d folds present: %s'
                     % (len(per_fold), n_folds, ' '.join(str(k) for k in sorted(per_fold))))
    if len(labels) < len(class_names):
        lines.append('  subset: %d of %d classes present: %s'
                     % (len(labels), len(class_names),
                        ', '.join('%d %s' % (c, class_names[c]) for c in labels)))
    per_cell = collections.Counter((r.fold, label_of(r)) for r in rows)
    counts = sorted({per_cell[(k, c)] for k in per_fold for c in labels})
    lines.append('  clips per present class in each fold: %s'
                 % ('%d' % counts[0] if len(counts) == 1 else
                    'from %d to %d' % (counts[0], counts[-1])))
    return lines


def check_file(path):
    """``--check``: load ``path`` without pickle and return the lines of its summary.

    Clip count per fold and class, duration statistics (overall, per fold and per class), and
    whether every entry loads with ``allow_pickle=False``. Raises UserError (one line) when the
    file is missing, corrupt, legacy/pickled or inconsistent.
    """
    ds = npzio.load_sound_npz(path, allow_pickle=False)
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]  # an object (pickled) entry raises ValueError here
            n_entries = len(z.files)
    except ValueError as e:
        raise UserError('%s: an entry needs pickle (%s)' % (path, one_line(e))) from None
    folds = ds.fold_numbers()
    n_cls = ds.n_classes
    counts = np.zeros((n_cls, len(folds)), dtype=np.int64)
    durations = {}
    for j, k in enumerate(folds):
        sounds, labels = ds.folds[k]
        counts[:, j] = np.bincount(labels, minlength=n_cls)[:n_cls]
        durations[k] = (np.array([len(s) for s in sounds], dtype=np.float64) / ds.fs, labels)
    total = int(counts.sum())
    lines = ['%s: %d Hz, format_version %d, %d classes, %d folds (%s), %d clips; all %d entries '
             'load without pickle' % (path, ds.fs, npzio.FORMAT_VERSION, n_cls, len(folds),
                                      ' '.join(map(str, folds)), total, n_entries)]
    width = max([len('%d %s' % (c, n)) for c, n in enumerate(ds.class_names)] + [5])
    lines.append('clips per fold and class:')
    lines.append('  %-*s %s %7s' % (width, 'class', ' '.join('%6s' % ('f%d' % k) for k in folds),
                                    'total'))
    for c, name in enumerate(ds.class_names):
        lines.append('  %-*s %s %7d' % (width, '%d %s' % (c, name),
                                        ' '.join('%6d' % v for v in counts[c]), counts[c].sum()))
    lines.append('  %-*s %s %7d' % (width, 'total', ' '.join('%6d' % v for v in counts.sum(0)),
                                    total))
    absent = [ds.class_names[c] for c in range(n_cls) if counts[c].sum() == 0]
    if absent:
        lines.append('  classes with no clip: %s' % ', '.join(absent))

    def stats(d):
        if len(d) == 0:
            return 'no clips'
        return ('min %.3f  median %.3f  mean %.3f  max %.3f  total %.1f min'
                % (d.min(), np.median(d), d.mean(), d.max(), d.sum() / 60))
    all_d = np.concatenate([d for d, _ in durations.values()]) if durations else np.zeros(0)
    all_l = np.concatenate([lab for _, lab in durations.values()]) if durations else np.zeros(0)
    lines.append('duration (s):')
    lines.append('  %-*s %s' % (width, 'all', stats(all_d)))
    for k in folds:
        lines.append('  %-*s %s' % (width, 'fold %d' % k, stats(durations[k][0])))
    for c, name in enumerate(ds.class_names):
        if counts[c].sum():
            lines.append('  %-*s %s' % (width, '%d %s' % (c, name), stats(all_d[all_l == c])))
    n_empty = int(np.sum(all_d == 0))
    if n_empty:
        lines.append('  WARNING: %d clips have 0 samples' % n_empty)
    return lines


def run_check(paths):
    """Print :func:`check_file` for each path; returns 0 (UserError propagates)."""
    for i, p in enumerate(paths):
        if i:
            print()
        for line in check_file(p):
            print(line)
    return 0


# --------------------------------------------------------------------------------------------
# Command line


def make_parser(prog, names, source_help):
    """The argument parser every generator shares; an entry point may add options to it.

    ``names``: the datasets the generator writes (registry names, the first one taking every
    row); ``source_help``: the ``--source`` help. Options: ``DATA`` (optional positional: absent
    with ``--check``), ``--source``, ``--workers`` (default: the CPUs available), ``--skipBad``
    and ``--check``.
    """
    files = ' and '.join('DATA/%s/wav*.npz' % n for n in names)
    reports = ' (and '.join('DATA/%s/skipped.txt' % n for n in names) + ')' * (len(names) - 1)
    parser = utils.OneLineParser(
        prog=prog, description='Build %s from %s, or check such a file (--check).'
                               % (files, registry.get(names[0]).title))
    parser.add_argument('data', metavar='DATA', nargs='?',
                        help='output root (%s go here)' % ' and '.join(n + '/' for n in names))
    parser.add_argument('--source', metavar='DIR' if 'zip' not in source_help else 'DIR_OR_ZIP',
                        help=source_help)
    parser.add_argument('--workers', type=int, default=convert.default_workers(), metavar='N',
                        help='conversion processes (default: %(default)s, the CPUs available; '
                             '1 converts in this process)')
    parser.add_argument('--skipBad', action='store_true',
                        help='skip missing, empty, truncated, unreadable or silent files, convert '
                             'the rest and list the skipped ones in %s (default: stop with exit '
                             'status 2 and write nothing)' % reports)
    parser.add_argument('--check', nargs='+', metavar='NPZ',
                        help='print clip counts per fold and class and duration statistics of '
                             'generated files, and verify they load without pickle; no DATA')
    return parser


def generator_main(prog, parser, argv, run):
    """The shared entry point of esc_gen.py and urbansound_gen.py; returns the exit status.

    Parses ``argv`` with ``parser`` (which has a positional ``data`` with nargs='?' and
    ``--check NPZ...``): with ``--check`` it checks those files (:func:`run_check`), otherwise it
    calls ``run(args)`` on DATA; errors become one-line messages through :func:`cli`.
    """
    try:
        args = parser.parse_args(argv)
        if args.check and args.data is not None:
            parser.error('--check takes npz files, not DATA')
        if not args.check and args.data is None:
            parser.error('DATA is required (or --check NPZ)')
    except SystemExit as e:
        return e.code
    if args.check:
        return cli(prog, lambda: run_check(args.check))
    return cli(prog, lambda: run(args))


def resolve_workers(workers):
    """``--workers``: None -> :func:`default_workers`; below 1 -> UserError naming the flag."""
    if workers is None:
        workers = convert.default_workers()
    if workers < 1:
        raise UserError('--workers must be >= 1, got %d' % workers)
    return workers


def cli(prog, fn):
    """Run ``fn()``; a UserError/BadFiles/Interrupted becomes its message lines and exit status."""
    try:
        return fn()
    except convert.BadFiles as e:
        for line in e.lines():
            print('%s: error: %s' % (prog, line), file=sys.stderr)
        print('%s: %s' % (prog, e.hint), file=sys.stderr)
        return 2
    except UserError as e:
        print('%s: error: %s' % (prog, one_line(e)), file=sys.stderr)
        return 2
    except (convert.Interrupted, KeyboardInterrupt) as e:
        msg = str(e) if isinstance(e, convert.Interrupted) else 'interrupted'
        print('%s: %s' % (prog, msg), file=sys.stderr)
        return 130
