"""Build the ESC-50 and ESC-10 dataset files (docs/method.md §2) from the official ESC-50 release.

Usage::

    .venv/bin/python esc_gen.py DATA [--source DIR_OR_ZIP] [--workers N] [--skipBad]
    .venv/bin/python esc_gen.py --check DATA/esc10/wav44.npz [...]

``--source`` is either an ESC-50 checkout (a directory holding ``meta/esc50.csv`` and
``audio/*.wav``) or the ESC-50 master zip (``ESC-50-master/meta/esc50.csv`` etc. inside; members
are read straight from the zip, nothing is extracted). Without ``--source`` the zip is downloaded
from https://github.com/karoldvl/ESC-50/archive/master.zip into ``DATA/ESC-50-master.zip`` (kept,
and reused by a later run).

Writes, for every sample rate fs a registered network needs (``models.sample_rates()``), in the
pickle-free format of :mod:`datagen.npzio`:

- ``DATA/esc50/wav{fs//1000}.npz``: all rows of ``meta/esc50.csv``; label = ``target`` (0-49),
  class names indexed by target from the ``category`` column;
- ``DATA/esc10/wav{fs//1000}.npz``: rows whose ``esc10`` column is True; labels 0-9 in ESC-10's
  own order as the reference generator numbers them (dog, rain, sea_waves, crying_baby, clock_tick,
  sneezing, helicopter, chainsaw, rooster, crackling_fire = ESC-50 targets 0, 10, 11, 20, 38, 21,
  40, 41, 1, 12).

The CSV is authoritative for fold and label; within a fold, clips keep the CSV order.

Per clip (:mod:`datagen.audio`, shared with ``urbansound_gen.py``): decode with libsndfile as float64,
downmix to mono (mean over channels), resample with a polyphase filter
(``scipy.signal.resample_poly``, up/down = target/source rate reduced by their gcd; skipped when
equal), convert to int16 (``clip(round(x * 32768))``), then trim leading and trailing digital
silence (samples equal to 0), keeping ``x[first_nonzero:last_nonzero + 1]``. Trimming comes after
resampling, as in the BC-learning reference, which trimmed the output of its ffmpeg conversion; so
the rates of a clip need not cover exactly the same time span.

Clips are converted in parallel (``--workers``, default: every CPU this process may use; 1 runs
in this process) and cached in ``DATA/.cache/esc50/`` as they finish, so a run interrupted by
Ctrl-C, kill -9 or a crash loses no finished clip: the next run converts only the rest. The
dataset files are assembled from the cache, each written to a temporary name and renamed (never
truncated), and the cache is removed once every file is written.

Bad input: a missing or malformed CSV stops the run with a one-line ``esc_gen.py: error: ...``
naming the file and line, exit status 2, nothing written. A listed audio file that is missing,
empty (0 bytes or 0 frames), truncated, not audio, or all-zero gets one line
``esc_gen.py: error: FILE: REASON (listed on CSV line N)``; without ``--skipBad`` the run stops
with exit status 2 and writes no dataset file (problems found without decoding, i.e. all but
silence and decoding errors, before anything at all is written; one found while converting stops
the run and leaves the clips converted so far in the cache for the rerun). With ``--skipBad`` the
other clips are converted and ``DATA/esc50/skipped.txt`` (and ``DATA/esc10/skipped.txt`` for the
ESC-10 rows) list each skipped file and why; a later run that skips nothing removes them.

A checkout holding only some of the clips (e.g. the 400 ESC-10 clips with a CSV listing only them)
works; the classes and folds present are reported, and ESC-50 files of such a subset still have
all 50 class names (labels stay the targets), so a subset is never mistaken for the full dataset
silently.

``--check FILE`` prints the clip count per fold and class and duration statistics of a generated
file and verifies that it loads without pickle.
"""
import collections
import http.client
import os
import sys
import urllib.error
import urllib.request
import zipfile

import utils
from datagen import audio, pipeline, registry
from datagen.convert import Item
from datagen.npzio import one_line
from utils import UserError, atomic_write

PROG = 'esc_gen.py'
ESC50_URL = 'https://github.com/karoldvl/ESC-50/archive/master.zip'
ZIP_NAME = 'ESC-50-master.zip'
DOWNLOAD_TIMEOUT_S = 30
CSV_PATH = 'meta/esc50.csv'
CACHE_NAME = 'esc50'  # DATA/.cache/esc50: converted clips, shared by esc50 and esc10
REQUIRED_COLUMNS = ('filename', 'fold', 'target', 'category', 'esc10')

# ESC-10 label -> ESC-50 target, and the ESC-10 class names in label order (docs/method.md §2).
ESC10_TARGETS = (0, 10, 11, 20, 38, 21, 40, 41, 1, 12)
ESC10_CLASSES = ('dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick', 'sneezing',
                 'helicopter', 'chainsaw', 'rooster', 'crackling_fire')

# Official ESC-50 category of each target, used only for targets absent from a subset's CSV.
ESC50_CLASSES = (
    'dog', 'rooster', 'pig', 'cow', 'frog', 'cat', 'hen', 'insects', 'sheep', 'crow',
    'rain', 'sea_waves', 'crackling_fire', 'crickets', 'chirping_birds', 'water_drops', 'wind',
    'pouring_water', 'toilet_flush', 'thunderstorm',
    'crying_baby', 'sneezing', 'clapping', 'breathing', 'coughing', 'footsteps', 'laughing',
    'brushing_teeth', 'snoring', 'drinking_sipping',
    'door_wood_knock', 'mouse_click', 'keyboard_typing', 'door_wood_creaks', 'can_opening',
    'washing_machine', 'vacuum_cleaner', 'clock_alarm', 'clock_tick', 'glass_breaking',
    'helicopter', 'chainsaw', 'siren', 'car_horn', 'engine', 'train', 'church_bells', 'airplane',
    'fireworks', 'hand_saw')

Row = collections.namedtuple('Row', 'line filename fold target category esc10')


# --------------------------------------------------------------------------------------------
# Sources: an ESC-50 checkout directory or the master zip


class DirSource:
    """ESC-50 checkout on disk: ``root/meta/esc50.csv`` and ``root/audio/*.wav``."""

    def __init__(self, root):
        self.root = root
        self.csv_name = os.path.join(root, CSV_PATH)

    def read_csv_text(self):
        try:
            with open(self.csv_name, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            raise UserError('%s: no such file (is --source %s an ESC-50 checkout?)'
                            % (self.csv_name, self.root)) from None
        except OSError as e:
            raise UserError('%s: cannot read (%s)' % (self.csv_name, e)) from None

    def audio_name(self, filename):
        return os.path.join(self.root, 'audio', filename)

    def clip_source(self, filename):
        return audio.ClipSource(self.audio_name(filename))

    def close(self):
        pass


class ZipSource:
    """The ESC-50 master zip; members are read in memory (``zipfile`` + ``BytesIO``)."""

    def __init__(self, zip_path):
        self.zip_path = zip_path
        try:
            self.zf = zipfile.ZipFile(zip_path)
        except (OSError, zipfile.BadZipFile) as e:
            raise UserError('%s: cannot open zip (%s)' % (zip_path, e)) from None
        names = self.zf.namelist()
        candidates = sorted(n for n in names if n == CSV_PATH or n.endswith('/' + CSV_PATH))
        if not candidates:
            self.zf.close()
            raise UserError('%s: no %s inside (not the ESC-50 master zip?)'
                            % (zip_path, CSV_PATH))
        self.csv_member = min(candidates, key=len)  # the shallowest one
        self.prefix = self.csv_member[:-len(CSV_PATH)]
        self.csv_name = '%s:%s' % (zip_path, self.csv_member)

    def read_csv_text(self):
        return self._read(self.csv_member)

    def _read(self, member):
        try:
            return self.zf.read(member)
        except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise UserError('%s:%s: cannot read from zip (%s)' % (self.zip_path, member, e)) \
                from None

    def audio_name(self, filename):
        return '%s:%saudio/%s' % (self.zip_path, self.prefix, filename)

    def clip_source(self, filename):
        return audio.ClipSource(self.zip_path, self.prefix + 'audio/' + filename)

    def close(self):
        self.zf.close()


def open_source(path):
    """``--source`` path -> DirSource or ZipSource; UserError when it is neither."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, CSV_PATH)):
            # Accept the folder an extracted zip leaves behind (a single ESC-50-master/ inside).
            subs = [d for d in sorted(os.listdir(path))
                    if os.path.isfile(os.path.join(path, d, CSV_PATH))]
            if len(subs) == 1:
                path = os.path.join(path, subs[0])
        return DirSource(path)
    if not os.path.exists(path):
        raise UserError('--source %s: no such file or directory' % path)
    if not zipfile.is_zipfile(path):
        raise UserError('--source %s: neither a directory nor a zip file' % path)
    return ZipSource(path)


def download(url, dest, timeout=DOWNLOAD_TIMEOUT_S):
    """Download ``url`` to ``dest`` atomically, with a tqdm byte counter.

    Raises OSError (urllib.error.URLError, timeouts...) or http.client.HTTPException on network
    failure; ``dest`` is then left absent.
    """
    def write(tmp):
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, 'wb') as f:
            total = resp.headers.get('Content-Length')
            with utils.progress(total=int(total) if total else None, unit='B',
                                unit_scale=True, desc='download') as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
    atomic_write(dest, write, suffix='.zip')


def fetch_default_source(data_dir):
    """Path of the ESC-50 zip in ``data_dir``, downloading it first when absent."""
    dest = os.path.join(data_dir, ZIP_NAME)
    if os.path.isfile(dest) and zipfile.is_zipfile(dest):
        print('using %s (downloaded earlier)' % dest)
        return dest
    print('downloading %s -> %s' % (ESC50_URL, dest))
    created = not os.path.exists(data_dir)
    try:
        download(ESC50_URL, dest, timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, http.client.HTTPException) as e:
        if created and os.path.isdir(data_dir) and not os.listdir(data_dir):
            os.rmdir(data_dir)  # leave no trace of a failed run
        raise UserError('could not download ESC-50 (%s); no network? pass --source PATH to a local '
                        'ESC-50 checkout or ESC-50-master.zip' % one_line(e)) from None
    return dest


# --------------------------------------------------------------------------------------------
# CSV


def parse_csv(data, csv_name):
    """``meta/esc50.csv`` bytes -> list of Row; UserError (naming file and line) when malformed.

    Besides :func:`datagen.pipeline.read_csv`'s checks: fold in 1-5, target in 0-49, esc10 True
    or False and True only for an ESC-10 class.
    """
    rows = []
    for line, where, rec in pipeline.read_csv(data, csv_name, REQUIRED_COLUMNS, 'filename'):
        fold = pipeline.check_fold(pipeline.parse_int_field(rec['fold'], 'fold', where),
                                   'esc50', where)
        target = pipeline.parse_int_field(rec['target'], 'target', where)
        if not 0 <= target < len(ESC50_CLASSES):
            raise UserError('%s: target must be in 0..%d, got %d'
                            % (where, len(ESC50_CLASSES) - 1, target))
        esc10_text = rec['esc10'].strip().lower()
        if esc10_text not in ('true', 'false'):
            raise UserError('%s: esc10 must be True or False, got %r' % (where, rec['esc10']))
        esc10 = esc10_text == 'true'
        if esc10 and target not in ESC10_TARGETS:
            raise UserError('%s: esc10 is True but target %d is not an ESC-10 class'
                            % (where, target))
        rows.append(Row(line, rec['filename'], fold, target, rec['category'].strip(), esc10))
    return rows


def esc50_class_names(rows, csv_name):
    """Class names indexed by target: the CSV's category, the official name for absent targets."""
    names = list(ESC50_CLASSES)
    seen = {}
    for r in rows:
        pipeline.check_class_name(seen, r.target, r.category, r.line,
                                  '%s line %d' % (csv_name, r.line), 'target')
    for t, (category, _) in seen.items():
        names[t] = category
    return names


SOURCE_HELP = ('ESC-50 checkout (meta/esc50.csv + audio/) or ESC-50-master.zip; default: '
               'download the zip into DATA')


def main(argv=None):
    """Command-line entry point of ``esc_gen.py`` (module docstring).

    Returns the exit status: 0 done, 2 a user error or bad input (one line per problem on
    stderr), 130 Ctrl-C.
    """
    parser = pipeline.make_parser(PROG, ('esc50', 'esc10'), SOURCE_HELP)
    return pipeline.generator_main(
        PROG, parser, argv, lambda args: run(args.data, args.source, workers=args.workers,
                                             skip_bad=args.skipBad))


def run(data_dir, source_path=None, workers=None, skip_bad=False):
    """Generate the files (see the module docstring); raises UserError / BadFiles."""
    workers = pipeline.resolve_workers(workers)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError('DATA %s: exists and is not a directory' % data_dir)
    if source_path is None:
        source_path = fetch_default_source(data_dir)
    source = open_source(source_path)
    try:
        rows = parse_csv(source.read_csv_text(), source.csv_name)
        esc50_names = esc50_class_names(rows, source.csv_name)
        items = [Item(source.clip_source(r.filename),
                      'listed on %s line %d' % (source.csv_name, r.line)) for r in rows]
    finally:
        source.close()
    esc10_label = {t: i for i, t in enumerate(ESC10_TARGETS)}
    outputs = [
        pipeline.Output('esc50', lambda r: True, lambda r: r.target, esc50_names, 'rows'),
        pipeline.Output('esc10', lambda r: r.esc10, lambda r: esc10_label[r.target],
                        list(ESC10_CLASSES), 'rows with esc10=True'),
    ]
    return pipeline.generate(PROG, data_dir, source.csv_name, CACHE_NAME, rows, items, outputs,
                             trim=registry.get('esc50').trim,  # esc10's row says the same
                             workers=workers, skip_bad=skip_bad)


if __name__ == '__main__':
    sys.exit(main())
