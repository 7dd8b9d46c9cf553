"""npzio: the pickle-free dataset format of docs/method.md §2 (round trip, legacy files, corrupt files)."""
import os
import zipfile

import numpy as np
import pytest

from datagen import npzio
from utils import UserError


def _folds():
    return {
        1: ([np.array([1, -2, 3], dtype=np.int16), np.array([32767, -32768], dtype=np.int16)],
            [0, 2]),
        2: ([np.array([5], dtype=np.int16)], np.array([1])),
        3: ([np.arange(-4, 4, dtype=np.int16), np.array([7, 7], dtype=np.int16),
             np.array([9], dtype=np.int16)], [2, 1, 0]),
    }


def _save(path, folds=None, fs=16000, names=('a', 'bb', 'ccc')):
    npzio.save_sound_npz(path, _folds() if folds is None else folds, fs, list(names))
    return path


def _rewrite(src, dst, **changes):
    """Copy the npz ``src`` to ``dst`` with entries replaced (value) or removed (None)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(dst, **arrays)
    return dst


def test_round_trip_exact(tmp_path):
    path = _save(str(tmp_path / 'wav16.npz'))
    ds = npzio.load_sound_npz(path)
    assert ds.fs == 16000 and isinstance(ds.fs, int)
    assert ds.class_names == ['a', 'bb', 'ccc']
    assert ds.path == path and not ds.legacy
    assert ds.fold_numbers() == [1, 2, 3] and ds.n_classes == 3
    for k, (sounds, labels) in _folds().items():
        got_sounds, got_labels = ds.folds[k]
        assert got_labels.dtype == np.int32
        np.testing.assert_array_equal(got_labels, labels)
        assert len(got_sounds) == len(sounds)
        for a, b in zip(got_sounds, sounds):
            assert a.dtype == np.int16
            np.testing.assert_array_equal(a, b)


def test_stored_layout(tmp_path):
    path = _save(str(tmp_path / 'd.npz'))
    with np.load(path, allow_pickle=False) as z:
        assert z['fold1_sounds'].dtype == np.int16
        np.testing.assert_array_equal(z['fold1_sounds'], [1, -2, 3, 32767, -32768])
        assert z['fold1_offsets'].dtype == np.int64
        np.testing.assert_array_equal(z['fold1_offsets'], [0, 3, 5])
        np.testing.assert_array_equal(z['fold3_offsets'], [0, 8, 10, 11])
        assert z['fold1_labels'].dtype == np.int32
        assert z['fs'].dtype == np.int64 and z['fs'].shape == () and int(z['fs']) == 16000
        assert z['class_names'].dtype.kind == 'U'
        assert int(z['format_version']) == npzio.FORMAT_VERSION == 1
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    u = os.umask(0)
    os.umask(u)
    return u


def test_no_temp_file_left_and_overwrite(tmp_path):
    path = _save(str(tmp_path / 'd.npz'))
    _save(path, folds={1: ([np.array([4], dtype=np.int16)], [0])}, fs=44100)
    assert os.listdir(tmp_path) == ['d.npz']
    ds = npzio.load_sound_npz(path)
    assert ds.fs == 44100 and list(ds.folds) == [1]


def test_failing_save_leaves_target_unchanged(tmp_path, monkeypatch):
    path = _save(str(tmp_path / 'd.npz'))
    before = open(path, 'rb').read()

    def broken_savez(file, **arrays):  # simulates a disk filling up half-way
        with open(file, 'wb') as f:
            f.write(b'PK\x03\x04 truncated')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(npzio.np, 'savez', broken_savez)
    with pytest.raises(OSError):
        _save(path, fs=8000)
    with pytest.raises(OSError):
        _save(str(tmp_path / 'new.npz'))
    assert os.listdir(tmp_path) == ['d.npz']
    assert open(path, 'rb').read() == before


def test_bad_arguments_to_save_write_nothing(tmp_path):
    path = str(tmp_path / 'd.npz')
    with pytest.raises(TypeError):
        _save(path, folds={1: ([np.array([1.0])], [0])})
    with pytest.raises(ValueError):
        _save(path, folds={1: ([np.array([1], dtype=np.int16)], [3])})  # label >= C
    with pytest.raises(ValueError):
        _save(path, folds={0: ([np.array([1], dtype=np.int16)], [0])})
    assert os.listdir(tmp_path) == []


def test_empty_fold_round_trips(tmp_path):
    path = _save(str(tmp_path / 'd.npz'), folds={1: ([], []), 2: ([np.array([3], np.int16)], [1])})
    ds = npzio.load_sound_npz(path)
    assert ds.folds[1][0] == [] and len(ds.folds[1][1]) == 0
    np.testing.assert_array_equal(ds.folds[2][0][0], [3])


def _write_legacy(path, folds):
    np.savez(path, **{'fold%d' % k: {'sounds': s, 'labels': lab} for k, (s, lab) in folds.items()})
    return path


def test_legacy_refused_without_allow_pickle(tmp_path):
    path = _write_legacy(str(tmp_path / 'wav16.npz'), _folds())
    with pytest.raises(UserError) as e:
        npzio.load_sound_npz(path)
    msg = str(e.value)
    assert path in msg and '--allowPickle' in msg and '\n' not in msg


def test_legacy_loaded_with_allow_pickle(tmp_path):
    path = _write_legacy(str(tmp_path / 'wav44.npz'), _folds())
    ds = npzio.load_sound_npz(path, allow_pickle=True)
    assert ds.legacy and ds.fs == 44100
    assert ds.class_names == ['class0', 'class1', 'class2']
    for k, (sounds, labels) in _folds().items():
        np.testing.assert_array_equal(ds.folds[k][1], labels)
        assert ds.folds[k][1].dtype == np.int32
        for a, b in zip(ds.folds[k][0], sounds):
            assert a.dtype == np.int16
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name,fs', [('wav8.npz', 8000), ('wav16.npz', 16000),
                                     ('wav22.npz', 22050), ('wav48.npz', 48000)])
def test_legacy_fs_from_name(tmp_path, name, fs):
    path = _write_legacy(str(tmp_path / name), {1: ([np.array([1], np.int16)], [0])})
    assert npzio.load_sound_npz(path, allow_pickle=True).fs == fs


def test_legacy_unknown_rate_name(tmp_path):
    path = _write_legacy(str(tmp_path / 'esc10.npz'), {1: ([np.array([1], np.int16)], [0])})
    with pytest.raises(UserError, match='esc10.npz'):
        npzio.load_sound_npz(path, allow_pickle=True)


def test_missing_file(tmp_path):
    path = str(tmp_path / 'nope.npz')
    with pytest.raises(UserError, match='nope.npz: no such file'):
        npzio.load_sound_npz(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / 'junk.npz'
    path.write_bytes(b'\x80\x04 not a zip at all')
    for allow in (False, True):  # never handed to the unpickler, even with allow_pickle
        with pytest.raises(UserError, match='junk.npz: not an .npz'):
            npzio.load_sound_npz(str(path), allow_pickle=allow)


def test_truncated_file(tmp_path):
    path = _save(str(tmp_path / 'd.npz'))
    data = open(path, 'rb').read()
    bad = tmp_path / 'trunc.npz'
    bad.write_bytes(data[:len(data) // 2] + data[-200:])  # central directory kept, data cut
    with pytest.raises(UserError, match='trunc.npz'):
        npzio.load_sound_npz(str(bad))


@pytest.mark.parametrize('key,value,needle', [
    ('fold1_offsets', np.array([0, 4, 3], np.int64), 'fold1_offsets inconsistent'),
    ('fold1_offsets', np.array([0, 3, 6], np.int64), 'fold1_offsets inconsistent'),
    ('fold1_offsets', np.array([1, 3, 5], np.int64), 'fold1_offsets inconsistent'),
    ('fold1_offsets', np.array([0, 5], np.int64), '1 clips (offsets) but 2 labels'),
    ('fold2_labels', np.array([1, 1], np.int32), '1 clips (offsets) but 2 labels'),
    ('fold2_labels', np.array([3], np.int32), 'outside [0, 3)'),
    ('fold1_sounds', np.array([1, 2, 3, 4, 5], np.float32), 'must be 1-D int16'),
    ('format_version', np.array(2, np.int64), 'format_version 2 is not supported'),
    ('class_names', np.array(['a', 'b', 'c'], dtype=object), "'class_names'"),
    ('fs', None, "missing key 'fs'"),
    ('format_version', None, "missing key 'format_version'"),
    ('fold3_labels', None, "missing key 'fold3_labels'"),
])
def test_corrupt_contents_refused(tmp_path, key, value, needle):
    good = _save(str(tmp_path / 'good.npz'))
    bad = _rewrite(good, str(tmp_path / 'bad.npz'), **{key: value})
    with pytest.raises(UserError) as e:
        npzio.load_sound_npz(bad)
    msg = str(e.value)
    assert bad in msg and needle in msg and '\n' not in msg


def test_zip_without_dataset_keys(tmp_path):
    path = str(tmp_path / 'other.npz')
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('readme.txt', 'hello')
    with pytest.raises(UserError, match="other.npz: missing key 'format_version'"):
        npzio.load_sound_npz(path)
