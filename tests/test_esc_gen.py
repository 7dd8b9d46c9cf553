"""esc_gen.py (docs/method.md §2) on a synthetic mini ESC-50 tree, plus one integration test on the real
ESC-10 clips (``esc10_npz_dir`` fixture, about 6 s once per session)."""
import csv
import os
import urllib.error
import zipfile

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

import esc_gen
import models
from datagen import npzio
from conftest import ESC50_DIR, write_wav

HEADER = 'filename,fold,target,category,esc10,src_file,take\n'
# (fold, target, category, esc10): deliberately not sorted by fold or class; targets 0 and 1 are
# ESC-10 classes (ESC-10 labels 0 and 8), 14 is not.
ROWS = [
    (2, 14, 'chirping_birds', False),
    (1, 1, 'rooster', True),
    (1, 0, 'dog', True),
    (2, 0, 'dog', True),
    (1, 14, 'chirping_birds', False),
    (2, 1, 'rooster', True),
    (1, 0, 'dog', True),
    (1, 14, 'chirping_birds', False),
    (2, 1, 'rooster', True),
    (2, 14, 'chirping_birds', False),
    (1, 1, 'rooster', True),
    (2, 0, 'dog', True),
]
STEREO_ROW = 5  # written as a 2-channel WAV
LEAD, TRAIL = 100, 57  # zeros around each mono clip's signal


def _name(i, fold, target):
    return '%d-%d-A-%d.wav' % (fold, 1000 + i, target)


def make_tree(root, rows=ROWS, stereo_row=STEREO_ROW, seed=0):
    """Write ``root/meta/esc50.csv`` and ``root/audio/*.wav`` (44.1 kHz, 16-bit).

    Returns {filename: int16 samples as written} ((n,) mono, (n, 2) for the stereo row). Mono clips
    are LEAD zeros, a signal whose every sample is nonzero (0.25-0.5 s), TRAIL zeros.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, 'meta'), exist_ok=True)
    lines = [HEADER]
    written = {}
    for i, (fold, target, category, esc10) in enumerate(rows):
        name = _name(i, fold, target)
        lines.append('%s,%d,%d,%s,%s,%d,A\n' % (name, fold, target, category, esc10, 1000 + i))
        n = int(rng.integers(11025, 22050))
        signal = (rng.integers(1, 8000, n) * rng.choice([-1, 1], n)).astype(np.int16)
        if i == stereo_row:
            samples = np.stack([signal, (-signal // 3).astype(np.int16)], axis=1)
        else:
            samples = np.concatenate([np.zeros(LEAD, np.int16), signal,
                                      np.zeros(TRAIL, np.int16)])
        write_wav(os.path.join(root, 'audio', name), samples, 44100)
        written[name] = samples
    with open(os.path.join(root, 'meta', 'esc50.csv'), 'w') as f:
        f.writelines(lines)
    return written


def zip_tree(root, zip_path, top='ESC-50-master'):
    with zipfile.ZipFile(zip_path, 'w') as zf:
        for dirpath, _, files in os.walk(root):
            for fn in files:
                full = os.path.join(dirpath, fn)
                zf.write(full, top + '/' + os.path.relpath(full, root).replace(os.sep, '/'))
    return zip_path


def trim(x):
    nz = np.flatnonzero(x)
    return x[nz[0]:nz[-1] + 1]


def expected_16k(int16_mono):
    """Independent 44.1 kHz int16 -> 16 kHz int16 clip, trimmed."""
    y = scipy.signal.resample_poly(int16_mono / 32768.0, 160, 441)
    return trim(np.clip(np.round(y * 32768), -32768, 32767).astype(np.int16))


def run_gen(capsys, *argv):
    rc = esc_gen.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith('esc_gen.py: error: ')]
    assert len(lines) == 1, err
    assert 'Traceback' not in err
    return lines[0]


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    """(source tree, written samples, DATA dir, stdout) for one run on the synthetic tree."""
    base = tmp_path_factory.mktemp('mini')
    src = str(base / 'ESC-50')
    written = make_tree(src)
    data = str(base / 'data')
    rc = esc_gen.main([data, '--source', src])
    assert rc == 0
    return src, written, data


def _rows_of(fold, pred=lambda r: True):
    return [(i, r) for i, r in enumerate(ROWS) if r[0] == fold and pred(r)]


def test_writes_one_file_per_rate_and_dataset(generated):
    _, _, data = generated
    rates = models.sample_rates()
    assert 16000 in rates and 44100 in rates
    expected = sorted(os.path.join(d, 'wav%d.npz' % (fs // 1000))
                      for d in ('esc10', 'esc50') for fs in rates)
    assert all_files(data) == expected
    for d in ('esc10', 'esc50'):
        for fs in rates:
            assert npzio.load_sound_npz(os.path.join(data, d, 'wav%d.npz' % (fs // 1000))).fs == fs


def test_esc50_counts_and_labels(generated):
    _, _, data = generated
    ds = npzio.load_sound_npz(os.path.join(data, 'esc50', 'wav44.npz'))
    assert ds.fold_numbers() == [1, 2]
    assert len(ds.class_names) == 50
    assert (ds.class_names[0], ds.class_names[1], ds.class_names[14]) == \
        ('dog', 'rooster', 'chirping_birds')
    assert ds.class_names[49] == 'hand_saw'  # absent from this CSV: official name
    for k in (1, 2):
        sounds, labels = ds.folds[k]
        assert len(sounds) == 6
        np.testing.assert_array_equal(labels, [r[1] for _, r in _rows_of(k)])  # CSV order


def test_esc10_label_mapping(generated):
    _, _, data = generated
    ds = npzio.load_sound_npz(os.path.join(data, 'esc10', 'wav44.npz'))
    assert ds.class_names == ['dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick',
                              'sneezing', 'helicopter', 'chainsaw', 'rooster', 'crackling_fire']
    mapping = {0: 0, 1: 8}
    for k in (1, 2):
        rows = _rows_of(k, lambda r: r[3])
        sounds, labels = ds.folds[k]
        assert len(sounds) == 4
        np.testing.assert_array_equal(labels, [mapping[r[1]] for _, r in rows])


def test_44k_is_source_trimmed_and_16k_is_resample_poly(generated):
    _, written, data = generated
    for dataset in ('esc50', 'esc10'):
        d44 = npzio.load_sound_npz(os.path.join(data, dataset, 'wav44.npz'))
        d16 = npzio.load_sound_npz(os.path.join(data, dataset, 'wav16.npz'))
        for k in (1, 2):
            rows = _rows_of(k, (lambda r: r[3]) if dataset == 'esc10' else (lambda r: True))
            for j, (i, (fold, target, _, _)) in enumerate(rows):
                if i == STEREO_ROW:
                    continue
                src = written[_name(i, fold, target)]
                got44, got16 = d44.folds[k][0][j], d16.folds[k][0][j]
                # known nonzero span: the LEAD/TRAIL zeros are gone, nothing else
                np.testing.assert_array_equal(got44, src[LEAD:len(src) - TRAIL])
                assert got44.dtype == got16.dtype == np.int16
                want16 = expected_16k(src)
                assert len(got16) == len(want16)
                assert np.max(np.abs(got16.astype(int) - want16)) <= 1
                assert got16[0] != 0 and got16[-1] != 0


def test_stereo_downmix(generated):
    _, written, data = generated
    fold, target = ROWS[STEREO_ROW][:2]
    st = written[_name(STEREO_ROW, fold, target)].astype(np.float64)
    mono = np.round((st[:, 0] + st[:, 1]) / 2).astype(np.int16)
    j = [i for i, _ in _rows_of(fold)].index(STEREO_ROW)
    ds = npzio.load_sound_npz(os.path.join(data, 'esc50', 'wav44.npz'))
    np.testing.assert_array_equal(ds.folds[fold][0][j], trim(mono))


def test_reports_subset(capsys, tmp_path):
    src = str(tmp_path / 'src')
    make_tree(src, rows=ROWS[:4])
    rc, out, _ = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 0
    assert 'subset: 3 of 50 classes present' in out
    assert 'esc10: 3 clips, 2 of 10 classes' in out
    assert 'done in' in out


def test_zip_source_equals_directory_source(generated, tmp_path, capsys):
    src, _, data = generated
    zpath = zip_tree(src, str(tmp_path / 'ESC-50-master.zip'))
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', zpath)
    assert rc == 0, err
    for rel in all_files(data):
        with np.load(os.path.join(data, rel)) as a, \
                np.load(os.path.join(tmp_path, 'data', rel)) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
                assert a[key].dtype == b[key].dtype


def test_missing_audio_file(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src)
    victim = _name(7, *ROWS[7][:2])
    os.remove(os.path.join(src, 'audio', victim))
    data = tmp_path / 'data'
    rc, _, err = run_gen(capsys, data, '--source', src)
    assert rc == 2
    line = error_line(err)
    assert victim in line and 'missing' in line and 'line 9' in line  # header is line 1
    assert not data.exists()


@pytest.mark.parametrize('kind', ['empty', 'zeros', 'garbage', 'truncated', 'zero bytes'])
def test_bad_wav(tmp_path, capsys, kind):
    src = str(tmp_path / 'src')
    make_tree(src)
    victim = _name(3, *ROWS[3][:2])
    path = os.path.join(src, 'audio', victim)
    if kind == 'empty':
        write_wav(path, np.zeros(0, np.int16))
        assert sf.info(path).frames == 0
    elif kind == 'zeros':
        write_wav(path, np.zeros(5000, np.int16))
    elif kind == 'garbage':
        with open(path, 'wb') as f:
            f.write(b'RIFF\x00\x00\x00\x00this is not audio')
    elif kind == 'truncated':
        with open(path, 'rb') as f:
            content = f.read()
        with open(path, 'wb') as f:
            f.write(content[:len(content) - 1000])
    else:
        open(path, 'wb').close()
    data = tmp_path / 'data'
    rc, _, err = run_gen(capsys, data, '--source', src)
    assert rc == 2
    line = error_line(err)
    assert victim in line and 'esc50.csv line 5' in line
    assert {'empty': '0 frames', 'zeros': 'silence', 'garbage': 'cannot read',
            'truncated': 'truncated', 'zero bytes': 'empty file (0 bytes)'}[kind] in line
    if kind == 'zeros':  # found while decoding: only the cache of the clips converted so far
        assert os.listdir(data) == ['.cache']
    else:  # found before anything is written
        assert not data.exists()


def test_skip_bad_reports_per_dataset(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src)
    esc10_victim = _name(3, *ROWS[3][:2])   # an ESC-10 row (fold 2, dog)
    esc50_victim = _name(4, *ROWS[4][:2])   # an ESC-50-only row (fold 1, chirping_birds)
    os.remove(os.path.join(src, 'audio', esc10_victim))
    write_wav(os.path.join(src, 'audio', esc50_victim), np.zeros(3000, np.int16))
    data = str(tmp_path / 'data')
    rc, out, err = run_gen(capsys, data, '--source', src, '--skipBad')
    assert rc == 0, err
    assert '2 files skipped (--skipBad)' in err
    report50 = open(os.path.join(data, 'esc50', 'skipped.txt')).read()
    report10 = open(os.path.join(data, 'esc10', 'skipped.txt')).read()
    assert esc10_victim in report50 and esc50_victim in report50
    assert esc10_victim in report10 and esc50_victim not in report10
    assert '2 of 12 listed files skipped' in report50 and '1 of 8 listed' in report10
    d50 = npzio.load_sound_npz(os.path.join(data, 'esc50', 'wav16.npz'))
    d10 = npzio.load_sound_npz(os.path.join(data, 'esc10', 'wav16.npz'))
    assert [len(d50.folds[k][0]) for k in (1, 2)] == [5, 5]
    assert [len(d10.folds[k][0]) for k in (1, 2)] == [4, 3]
    assert not os.path.exists(os.path.join(data, '.cache'))


def test_workers_1_equals_parallel_and_cache_is_removed(generated, tmp_path, capsys):
    src, _, data = generated
    assert not os.path.exists(os.path.join(data, '.cache'))
    rc, out, err = run_gen(capsys, tmp_path / 'data', '--source', src, '--workers', '1')
    assert rc == 0, err
    assert '12 clips: 0 already converted' in out and 'on 1 worker' in out
    for rel in all_files(data):
        with np.load(os.path.join(data, rel)) as a, \
                np.load(os.path.join(tmp_path, 'data', rel)) as b:
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


def test_check_command(generated, capsys):
    _, _, data = generated
    rc, out, err = run_gen(capsys, '--check', os.path.join(data, 'esc10', 'wav44.npz'),
                           os.path.join(data, 'esc50', 'wav16.npz'))
    assert rc == 0, err
    assert '44100 Hz' in out and '16000 Hz' in out and out.count('load without pickle') == 2
    assert '8 rooster' in out and 'duration (s):' in out
    rc, _, err = run_gen(capsys, data, '--check', os.path.join(data, 'esc10', 'wav44.npz'))
    assert rc == 2 and '--check takes npz files, not DATA' in err


@pytest.mark.parametrize('argv, words', [
    ([], 'DATA is required'),
    (['out', '--workers', 'two'], "--workers: invalid int value: 'two'"),
    (['out', '--noSuchFlag'], 'unrecognized arguments: --noSuchFlag'),
])
def test_command_line_mistakes_are_one_line(tmp_path, capsys, argv, words):
    argv = [str(tmp_path / a) if a == 'out' else a for a in argv]
    rc, out, err = run_gen(capsys, *argv)
    assert rc == 2 and out == ''
    assert err.count('\n') == 1 and words in err and err.startswith('esc_gen.py: error: ')
    assert not (tmp_path / 'out').exists()


def test_csv_missing_column(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src)
    csv_path = os.path.join(src, 'meta', 'esc50.csv')
    with open(csv_path) as f:
        rows = list(csv.reader(f))
    with open(csv_path, 'w', newline='') as f:
        csv.writer(f).writerows([r[:2] + r[3:] for r in rows])  # drop 'target'
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 2
    line = error_line(err)
    assert 'esc50.csv' in line and 'target' in line
    assert not (tmp_path / 'data').exists()


def test_csv_missing(tmp_path, capsys):
    (tmp_path / 'src').mkdir()
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', tmp_path / 'src')
    assert rc == 2 and 'esc50.csv' in error_line(err)


def test_bad_csv_value_names_line(tmp_path, capsys):
    src = str(tmp_path / 'src')
    make_tree(src)
    csv_path = os.path.join(src, 'meta', 'esc50.csv')
    lines = open(csv_path).read().splitlines(True)
    lines[3] = lines[3].replace(',1,0,dog,', ',x,0,dog,')
    open(csv_path, 'w').writelines(lines)
    rc, _, err = run_gen(capsys, tmp_path / 'data', '--source', src)
    assert rc == 2
    line = error_line(err)
    assert 'esc50.csv line 4' in line and 'fold' in line


def test_no_source_and_no_network(tmp_path, capsys, monkeypatch):
    calls = []

    def failing_download(url, dest, timeout=None):
        calls.append((url, dest))
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(esc_gen, 'download', failing_download)
    data = tmp_path / 'data'
    rc, _, err = run_gen(capsys, data)
    assert rc == 2 and len(calls) == 1
    assert calls[0][0] == esc_gen.ESC50_URL
    line = error_line(err)
    assert '--source' in line and 'download' in line
    assert not data.exists()


def test_no_source_uses_earlier_download(tmp_path, capsys, monkeypatch):
    src = str(tmp_path / 'src')
    make_tree(src, rows=ROWS[:2])
    data = tmp_path / 'data'
    data.mkdir()
    zip_tree(src, str(data / esc_gen.ZIP_NAME))
    monkeypatch.setattr(esc_gen, 'download', lambda *a, **k: pytest.fail('downloaded again'))
    rc, _, err = run_gen(capsys, data)
    assert rc == 0, err
    assert os.path.exists(data / 'esc50' / 'wav16.npz')


def test_real_esc10(esc10_npz_dir):
    """The real ESC-10 clips: 5 folds x 80 clips, 8 per class per fold, 16 kHz = resample_poly."""
    d44 = npzio.load_sound_npz(os.path.join(esc10_npz_dir, 'esc10', 'wav44.npz'),
                               allow_pickle=False)
    d16 = npzio.load_sound_npz(os.path.join(esc10_npz_dir, 'esc10', 'wav16.npz'),
                               allow_pickle=False)
    assert (d44.fs, d16.fs) == (44100, 16000)
    assert d44.class_names == d16.class_names == list(esc_gen.ESC10_CLASSES)
    for ds in (d44, d16):
        assert ds.fold_numbers() == [1, 2, 3, 4, 5]
        for k in range(1, 6):
            sounds, labels = ds.folds[k]
            assert len(sounds) == 80
            np.testing.assert_array_equal(np.bincount(labels, minlength=10), [8] * 10)
            assert all(s[0] != 0 and s[-1] != 0 for s in sounds)
    np.testing.assert_array_equal(d44.folds[3][1], d16.folds[3][1])

    # The first ESC-10 row of fold 2 in the CSV is clip 0 of fold 2.
    with open(os.path.join(ESC50_DIR, 'meta', 'esc50.csv')) as f:
        row = next(r for r in csv.DictReader(f) if r['fold'] == '2' and r['esc10'] == 'True')
    src, fs = sf.read(os.path.join(ESC50_DIR, 'audio', row['filename']), dtype='int16')
    assert fs == 44100 and src.ndim == 1
    assert d44.folds[2][1][0] == esc_gen.ESC10_TARGETS.index(int(row['target']))
    np.testing.assert_array_equal(d44.folds[2][0][0], trim(src))
    want16 = expected_16k(src)
    got16 = d16.folds[2][0][0]
    assert len(got16) == len(want16)
    assert np.max(np.abs(got16.astype(int) - want16)) <= 1
