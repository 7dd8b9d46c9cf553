"""urbansound_gen.py on miniature UrbanSound8K trees made here (the real CSV schema, one file per
WAV encoding UrbanSound8K holds, docs/method.md §2), and its fault suite: bad files, bad CSVs, kill -9 and Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from datagen import audio
import models
from datagen import npzio
import urbansound_gen
from conftest import REPO_ROOT, reference_decode, write_wav

HEADER = 'slice_file_name,fsID,start,end,salience,fold,classID,class\n'
CLASSES = urbansound_gen.CLASSES

# (subtype, container, channels, source rate, fold, classID, seconds); CSV order, not sorted by
# fold. Together: 8-bit unsigned, 16/24/32-bit PCM, 32/64-bit float, IMA and MS ADPCM, mono and
# stereo, WAVE_FORMAT_EXTENSIBLE, 8 to 96 kHz.
FILES = [
    ('PCM_16', 'WAV', 2, 44100, 2, 3, 0.30),
    ('PCM_U8', 'WAV', 1, 8000, 1, 0, 0.25),
    ('PCM_24', 'WAV', 1, 96000, 1, 1, 0.20),
    ('PCM_32', 'WAV', 2, 48000, 3, 2, 0.15),
    ('FLOAT', 'WAV', 1, 22050, 2, 4, 0.35),
    ('IMA_ADPCM', 'WAV', 1, 11025, 1, 5, 0.20),
    ('MS_ADPCM', 'WAV', 2, 22050, 3, 6, 0.10),
    ('PCM_16', 'WAVEX', 1, 16000, 2, 7, 0.25),
    ('PCM_24', 'WAVEX', 2, 32000, 1, 8, 0.20),
    ('FLOAT', 'WAVEX', 2, 44100, 3, 9, 0.20),
    ('PCM_U8', 'WAVEX', 2, 11025, 2, 0, 0.30),
    ('IMA_ADPCM', 'WAV', 2, 8000, 3, 1, 0.25),
    ('MS_ADPCM', 'WAV', 1, 48000, 2, 2, 0.10),
    ('DOUBLE', 'WAV', 1, 24000, 1, 3, 0.20),
    ('PCM_16', 'WAV', 1, 44100, 1, 4, 0.20),
]
N_PER_FOLD = {1: 6, 2: 5, 3: 4}


def clip_name(i, class_id):
    return '%d-%d-0-%d.wav' % (100000 + i, class_id, i % 3)


def make_tree(root, files=FILES, seed=0):
    """Write ``root/metadata/UrbanSound8K.csv`` and ``root/audio/fold*/`` -> list of wav paths."""
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    paths = []
    for i, (subtype, container, ch, fs, fold, class_id, seconds) in enumerate(files):
        name = clip_name(i, class_id)
        path = os.path.join(root, 'audio', 'fold%d' % fold, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        n = int(seconds * fs)
        t = np.arange(n) / fs
        x = np.stack([0.4 * np.sin(2 * np.pi * (200 + 150 * c + 37 * i) * t)
                      + 0.03 * rng.standard_normal(n) for c in range(ch)], axis=1)
        sf.write(path, x, fs, subtype=subtype, format=container)
        lines.append('%s,%d,%.3f,%.3f,%d,%d,%d,%s\n' % (name, 100000 + i, 1.0, 1.0 + seconds,
                                                        1 + i % 2, fold, class_id,
                                                        CLASSES[class_id]))
        paths.append(path)
    os.makedirs(os.path.join(root, 'metadata'), exist_ok=True)
    with open(os.path.join(root, 'metadata', 'UrbanSound8K.csv'), 'w') as f:
        f.writelines(lines)
    return paths


def csv_path(root):
    return os.path.join(root, 'metadata', 'UrbanSound8K.csv')


def run_gen(capsys, *argv):
    rc = urbansound_gen.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def error_lines(err):
    lines = [ln for ln in err.splitlines() if ln.startswith('urbansound_gen.py: error: ')]
    assert 'Traceback' not in err
    return lines


def error_line(err):
    lines = error_lines(err)
    assert len(lines) == 1, err
    return lines[0]


def npz_files(root):
    """Dataset files under ``root`` (not the conversion cache)."""
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs
                  if f.endswith('.npz') and '.cache' not in d.split(os.sep))


def rate_files():
    return ['urbansound8k/wav%d.npz' % (fs // 1000) for fs in models.sample_rates()]


def load(data, fs):
    return npzio.load_sound_npz(os.path.join(data, 'urbansound8k', 'wav%d.npz' % (fs // 1000)))


def same_arrays(a, b):
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            assert x[k].dtype == y[k].dtype
            np.testing.assert_array_equal(x[k], y[k])


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    """(source root, wav paths, DATA, stdout) of one run on the full encoding tree."""
    base = tmp_path_factory.mktemp('us8k')
    src = str(base / 'UrbanSound8K')
    paths = make_tree(src)
    data = str(base / 'data')
    import io
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = urbansound_gen.main([data, '--source', src, '--workers', '2'])
    assert rc == 0
    return src, paths, data, out.getvalue()


def test_files_counts_labels(generated):
    _, _, data, out = generated
    assert sorted(os.listdir(os.path.join(data, 'urbansound8k'))) == \
        sorted(os.path.basename(p) for p in rate_files())
    assert not os.path.exists(os.path.join(data, '.cache'))  # removed after success
    for fs in models.sample_rates():
        ds = load(data, fs)
        assert ds.fs == fs and ds.class_names == list(CLASSES)
        assert ds.fold_numbers() == [1, 2, 3]
        for k, n in N_PER_FOLD.items():
            sounds, labels = ds.folds[k]
            assert len(sounds) == n
            np.testing.assert_array_equal(labels, [f[5] for f in FILES if f[4] == k])  # CSV order
    assert 'subset: 3 of 10 folds present: 1 2 3' in out
    assert 'no silence trimming' in out


def test_lengths_and_values_match_reference_decode(generated):
    """Every encoding: length = duration x fs (+-1), int16 within 1 LSB of an independent decode
    (Python's wave module / a RIFF parser and ADPCM decoders written in conftest) resampled."""
    _, paths, data, _ = generated
    for fs in models.sample_rates():
        ds = load(data, fs)
        for k in N_PER_FOLD:
            idx = [i for i, f in enumerate(FILES) if f[4] == k]
            for j, i in enumerate(idx):
                ref, src_fs = reference_decode(paths[i])
                assert src_fs == FILES[i][3]
                mono = ref.mean(axis=1)
                g = np.gcd(fs, src_fs)
                y = mono if fs == src_fs else scipy.signal.resample_poly(mono, fs // g,
                                                                         src_fs // g)
                want = np.clip(np.round(y * 32768), -32768, 32767)
                got = ds.folds[k][0][j]
                assert got.dtype == np.int16
                assert abs(len(got) - len(mono) / src_fs * fs) <= 1, (FILES[i], fs)
                assert len(got) == len(want)
                assert np.max(np.abs(got.astype(np.int64) - want)) <= 1, (FILES[i], fs)
                if not FILES[i][0].endswith('ADPCM'):  # ADPCM pads its last block
                    assert len(mono) == int(FILES[i][6] * src_fs)  # the frames written


def test_whole_clips_no_trimming(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src, files=FILES[:1])
    x = (np.arange(1, 4411) % 700 + 1).astype(np.int16)
    write_wav(os.path.join(src, 'audio', 'fold2', clip_name(0, 3)),
              np.concatenate([np.zeros(441, np.int16), x, np.zeros(882, np.int16)]), 44100)
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 0, err
    clip = load(str(tmp_path / 'data'), 44100).folds[2][0][0]
    assert len(clip) == 441 + 4410 + 882 and clip[0] == 0 and clip[-1] == 0


def test_sequential_equals_parallel(generated, tmp_path, capsys):
    src, _, data, _ = generated
    rc, out, err = run_gen(capsys, tmp_path / 'data', '--source', src, '--workers', '1')
    assert rc == 0, err
    assert 'on 1 worker' in out
    for rel in rate_files():
        same_arrays(os.path.join(data, rel), os.path.join(tmp_path, 'data', rel))


def test_check(generated, capsys):
    _, _, data, _ = generated
    path = os.path.join(data, 'urbansound8k', 'wav16.npz')
    rc, out, err = run_gen(capsys, '--check', path)
    assert rc == 0, err
    assert '16000 Hz' in out and '15 clips' in out and 'load without pickle' in out
    assert '3 dog_bark' in out and 'duration (s):' in out and 'fold 3' in out
    rc, _, err = run_gen(capsys, '--check', os.path.join(data, 'urbansound8k', 'nope.npz'))
    assert rc == 2 and 'no such file' in error_line(err)


def test_label_from_csv_warns_on_file_name(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src, files=FILES[:3])
    text = open(csv_path(src)).read().replace(',1,1,car_horn', ',1,7,jackhammer')
    open(csv_path(src), 'w').write(text)
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 0
    assert 'warning: 1 rows have a file name whose classID part differs' in err
    assert list(load(str(tmp_path / 'data'), 16000).folds[1][1]) == [0, 7]


def test_source_folder_holding_urbansound8k(tmp_path, capsys):
    make_tree(str(tmp_path / 'dl' / 'UrbanSound8K'), files=FILES[:2])
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', tmp_path / 'dl')
    assert rc == 0, err


# --------------------------------------------------------------------------------------------
# Bad files

VICTIM = 4  # FLOAT mono 22.05 kHz, fold 2, CSV line 6


def damage(path, kind):
    if kind == 'missing':
        os.remove(path)
    elif kind == 'empty':
        open(path, 'wb').close()
    elif kind == 'no frames':
        write_wav(path, np.zeros(0, np.int16))
    elif kind == 'truncated':
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[:len(data) * 2 // 3])
    elif kind == 'not audio':
        open(path, 'w').write('<html>403 Forbidden</html>\n' * 30)
    elif kind == 'silent':
        write_wav(path, np.zeros((2000, 2), np.int16), 22050)


REASONS = {'missing': ': missing (listed on ', 'empty': 'empty file (0 bytes)',
           'no frames': 'empty audio (0 frames)', 'truncated': 'truncated: the data chunk',
           'not audio': 'cannot read audio (libsndfile: ',
           'silent': 'entirely digital silence (every sample is 0)'}


@pytest.mark.parametrize('kind', list(REASONS))
def test_bad_file_stops_and_writes_nothing(tmp_path, capsys, kind):
    src = str(tmp_path / 'src')
    paths = make_tree(src)
    damage(paths[VICTIM], kind)
    data = tmp_path / 'data'
    rc, _, err = run_gen(capsys, data, '--source', src)
    assert rc == 2
    line = error_line(err)
    assert line.startswith('urbansound_gen.py: error: ' + paths[VICTIM] + ': ')
    assert REASONS[kind] in line and 'UrbanSound8K.csv line 6' in line
    assert '--skipBad' in err
    assert npz_files(str(tmp_path)) == []
    if kind != 'silent':  # found before anything is written
        assert not data.exists()
    else:  # found while decoding: only the cache of finished clips, for the rerun
        assert os.listdir(data) == ['.cache']


@pytest.mark.parametrize('kind', list(REASONS))
def test_skip_bad_converts_the_rest(tmp_path, capsys, kind):
    src = str(tmp_path / 'src')
    paths = make_tree(src)
    damage(paths[VICTIM], kind)
    data = str(tmp_path / 'data')
    rc, out, err = run_gen(capsys, data, '--source', src, '--skipBad')
    assert rc == 0, err
    assert 'urbansound_gen.py: skipped %s: %s' % (paths[VICTIM], REASONS[kind].lstrip(': ')) \
        in err
    assert '1 file skipped (--skipBad)' in err
    report = os.path.join(data, 'urbansound8k', 'skipped.txt')
    rows = [ln.split('\t') for ln in open(report).read().splitlines() if not ln.startswith('#')]
    assert len(rows) == 1
    assert rows[0][0] == paths[VICTIM] and 'line 6' in rows[0][1]
    assert REASONS[kind].lstrip(': ').split(' (')[0] in rows[0][2]
    assert '1 of 15 listed files skipped' in open(report).read()
    ds = load(data, 16000)
    assert len(ds.folds[2][0]) == N_PER_FOLD[2] - 1
    np.testing.assert_array_equal(ds.folds[2][1], [3, 7, 0, 2])  # classID 4 is gone
    assert not os.path.exists(os.path.join(data, '.cache'))


def test_several_bad_files_one_line_each(tmp_path, capsys):
    src = str(tmp_path / 'src')
    paths = make_tree(src)
    damage(paths[1], 'truncated')
    damage(paths[9], 'missing')
    damage(paths[12], 'not audio')
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 2
    lines = error_lines(err)
    assert len(lines) == 3
    assert [paths[i] in ln for i, ln in zip((1, 9, 12), lines)] == [True] * 3
    assert not (tmp_path / 'data').exists()


def test_rerun_after_bad_file_reuses_cache_and_drops_report(tmp_path, capsys):
    src = str(tmp_path / 'src')
    paths = make_tree(src)
    good = open(paths[-1], 'rb').read()
    damage(paths[-1], 'silent')  # last in the CSV: 14 clips are converted before it
    data = str(tmp_path / 'data')
    rc, _, err = run_gen(capsys, data, '--source', src, '--workers', '1')
    assert rc == 2 and 'silence' in error_line(err)
    assert 'the next run continues from them' in err
    rc, out, err = run_gen(capsys, data, '--source', src, '--workers', '1', '--skipBad')
    assert rc == 0
    assert '15 clips: 14 already converted' in out and ', 1 to convert' in out
    assert os.path.exists(os.path.join(data, 'urbansound8k', 'skipped.txt'))
    open(paths[-1], 'wb').write(good)
    rc, out, err = run_gen(capsys, data, '--source', src)
    assert rc == 0, err
    assert '15 clips: 0 already converted' in out  # the cache went with the successful run
    assert not os.path.exists(os.path.join(data, 'urbansound8k', 'skipped.txt'))
    assert len(load(data, 44100).folds[1][0]) == N_PER_FOLD[1]


def test_worker_exception_names_the_file(tmp_path, capsys, monkeypatch):
    src = str(tmp_path / 'src')
    paths = make_tree(src)
    orig = audio.convert_clip

    def convert(mono, src_fs, fs, trim):
        if src_fs == 96000:
            raise RuntimeError('decoder exploded')
        return orig(mono, src_fs, fs, trim)
    monkeypatch.setattr(audio, 'convert_clip', convert)  # the forked workers inherit it
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src, '--workers', '2')
    assert rc == 2
    line = error_line(err)
    assert paths[2] in line and 'conversion failed (RuntimeError: decoder exploded)' in line
    assert npz_files(str(tmp_path)) == []


def test_worker_death_is_one_line(tmp_path, capsys, monkeypatch):
    src = str(tmp_path / 'src')
    make_tree(src)
    orig = audio.convert_clip

    def convert(mono, src_fs, fs, trim):
        if src_fs == 96000:
            os._exit(9)
        return orig(mono, src_fs, fs, trim)
    monkeypatch.setattr(audio, 'convert_clip', convert)
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src, '--workers', '2')
    assert rc == 2
    assert 'a worker process died while converting' in error_line(err)
    assert npz_files(str(tmp_path)) == []


# --------------------------------------------------------------------------------------------
# Bad CSVs, folds, arguments


def _rewrite_csv(src, fn):
    lines = open(csv_path(src)).read().splitlines(True)
    open(csv_path(src), 'w').writelines(fn(lines))


CSV_FAULTS = {
    'missing column': (lambda ls: [','.join(ln.split(',')[:6] + ln.split(',')[7:]) for ln in ls],
                       'line 1: missing column classID'),
    'unknown fold': (lambda ls: ls[:4] + [ls[4].replace(',3,2,', ',11,2,')] + ls[5:],
                     'line 5: unknown fold 11 (UrbanSound8K has folds 1-10)'),
    'duplicate row': (lambda ls: ls + [ls[3]],
                      'line 17: duplicate row: %s already listed on line 4' % clip_name(2, 1)),
    'bad classID': (lambda ls: ls[:2] + [ls[2].replace(',1,0,', ',1,10,')] + ls[3:],
                    'line 3: classID must be in 0..9, got 10'),
    'not an integer': (lambda ls: ls[:7] + [ls[7].replace(',3,6,', ',three,6,')] + ls[8:],
                       "line 8: fold must be an integer, got 'three'"),
    'too few fields': (lambda ls: ls[:9] + [','.join(ls[9].split(',')[:5]) + '\n'] + ls[10:],
                       'line 10: too few fields (5 of 8)'),
    'too many fields': (lambda ls: ls[:10] + [ls[10].rstrip('\n') + ',extra\n'] + ls[11:],
                        'line 11: 9 fields, more than the 8 columns'),
    'class name clash': (lambda ls: ls[:11] + [ls[11].replace(',air_conditioner', ',fan')]
                         + ls[12:], "line 12: classID 0 is 'fan' but 'air_conditioner' on line 3"),
}


@pytest.mark.parametrize('fault', list(CSV_FAULTS))
def test_bad_csv_refused_with_line(tmp_path, capsys, fault):
    src = str(tmp_path / 'src')
    make_tree(src)
    fn, message = CSV_FAULTS[fault]
    _rewrite_csv(src, fn)
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 2
    line = error_line(err)
    assert line.startswith('urbansound_gen.py: error: ' + csv_path(src))
    assert message in line, line
    assert not (tmp_path / 'data').exists()


def test_missing_csv_and_source(tmp_path, capsys):
    (tmp_path / 'src').mkdir()
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', tmp_path / 'src')
    assert rc == 2 and 'UrbanSound8K.csv: no such file' in error_line(err)
    rc, _, err = run_gen(capsys, tmp_path / 'data')
    line = error_line(err)
    assert rc == 2 and '--source' in line and 'cannot be downloaded' in line
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', tmp_path / 'nowhere')
    assert rc == 2 and 'no such directory' in error_line(err)
    assert not (tmp_path / 'data').exists()


def test_missing_fold_folder_and_subsets(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src)
    import shutil
    shutil.rmtree(os.path.join(src, 'audio', 'fold2'))
    rc, _, err = run_gen(capsys, tmp_path / 'd1', '--source', src)
    assert rc == 2
    line = error_line(err)
    assert os.path.join(src, 'audio', 'fold2') + ': no such directory (5 CSV rows)' in line
    assert '--folds' in line
    rc, out, err = run_gen(capsys, tmp_path / 'd2', '--source', src, '--folds', '1', '3')
    assert rc == 0, err
    assert 'subset: 2 of 10 folds present: 1 3' in out
    assert load(str(tmp_path / 'd2'), 16000).fold_numbers() == [1, 3]
    rc, out, err = run_gen(capsys, tmp_path / 'd3', '--source', src, '--skipBad')
    assert rc == 0
    assert '5 files skipped' in err
    assert load(str(tmp_path / 'd3'), 16000).fold_numbers() == [1, 3]
    rc, _, err = run_gen(capsys, tmp_path / 'd4', '--source', src, '--folds', '4')
    assert rc == 2 and '--folds: fold 4 not in' in error_line(err)
    rc, _, err = run_gen(capsys, tmp_path / 'd4', '--source', src, '--folds', '0', '11')
    assert rc == 2 and '--folds: UrbanSound8K has folds 1-10, got 0 11' in error_line(err)


def test_stale_temporary_files_are_removed(generated, tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src, files=FILES[:2])
    out_dir = tmp_path / 'data' / 'urbansound8k'
    out_dir.mkdir(parents=True)
    (out_dir / '.wav16.npz.k1ll3d.tmp.npz').write_bytes(b'PK\x03\x04 half a file')
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 0, err
    assert sorted(os.listdir(out_dir)) == sorted(os.path.basename(p) for p in rate_files())


# --------------------------------------------------------------------------------------------
# kill -9 and Ctrl-C in the middle of conversion (a real subprocess; each clip made slow by a
# wrapper that patches audio.convert_clip before the pool forks)

SLOW_RUN = '''
import signal, sys, time
# A process started in the background by a non-interactive shell inherits SIGINT ignored (and
# Python then installs no KeyboardInterrupt handler); restore what a terminal's process has.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, %r)
from datagen import audio
_orig = audio.convert_clip
def slow(*a, **k):
    time.sleep(0.1)
    return _orig(*a, **k)
audio.convert_clip = slow
import urbansound_gen
sys.exit(urbansound_gen.main(sys.argv[1:]))
''' % REPO_ROOT

MANY = [('PCM_16', 'WAV', 1, 48000, 1 + i % 3, i % 10, 0.2) for i in range(24)]


def _start_slow(src, data, log):
    return subprocess.Popen([sys.executable, '-c', SLOW_RUN, data, '--source', src,
                             '--workers', '2'], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _cached(data):
    root = os.path.join(data, '.cache', 'urbansound8k')
    if not os.path.isdir(root):
        return []
    return [f for f in os.listdir(root) if f.endswith('.npy') and not f.startswith('.')]


def _wait_for_cache(proc, data, n, timeout=60):
    t0 = time.time()
    while len(_cached(data)) < n:
        assert proc.poll() is None, 'the generator ended before it was interrupted'
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def _group_gone(pgid, timeout=10):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_kill_9_mid_conversion_then_rerun(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src, files=MANY)
    data = str(tmp_path / 'data')
    with open(tmp_path / 'log', 'w') as log:
        proc = _start_slow(src, data, log)
        try:
            _wait_for_cache(proc, data, 4)
            proc.send_signal(signal.SIGKILL)  # the main process only, as `kill -9 PID` does
            proc.wait(10)
            assert _group_gone(proc.pid), 'worker processes outlived the killed main process'
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == -signal.SIGKILL
    for rel in npz_files(data):  # nothing, or only complete files
        npzio.load_sound_npz(os.path.join(data, rel))
    assert not os.path.exists(os.path.join(data, 'urbansound8k'))
    n_done = len(_cached(data))
    assert 4 <= n_done < len(MANY)

    rc, out, err = run_gen(capsys, data, '--source', src)
    assert rc == 0, err
    assert '24 clips: %d already converted' % n_done in out
    assert '%d to convert' % (len(MANY) - n_done) in out
    assert not os.path.exists(os.path.join(data, '.cache'))
    rc, _, err = run_gen(capsys, tmp_path / 'clean', '--source', src)
    assert rc == 0, err
    for rel in rate_files():
        same_arrays(os.path.join(data, rel), os.path.join(tmp_path, 'clean', rel))


def test_ctrl_c_mid_conversion(tmp_path):
    src = str(tmp_path / 'src')
    make_tree(src, files=MANY)
    data = str(tmp_path / 'data')
    with open(tmp_path / 'log', 'w') as log:
        proc = _start_slow(src, data, log)
        try:
            _wait_for_cache(proc, data, 2)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30)
            assert _group_gone(proc.pid)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = open(tmp_path / 'log').read()
    assert rc == 130, text
    assert 'Traceback' not in text
    assert 'urbansound_gen.py: interrupted; converted clips are kept in' in text
    assert not os.path.exists(os.path.join(data, 'urbansound8k'))
    assert len(_cached(data)) >= 2
