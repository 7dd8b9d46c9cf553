"""datagen.audio, datagen.convert and datagen.pipeline: the shared WAV reader (every encoding of
UrbanSound8K and ESC-50, checked against an independent decoder), the bad-input reasons, per-clip
conversion and ``--check``."""
import os
import struct
import zipfile

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from datagen import audio, convert, pipeline
from datagen import npzio
from datagen.audio import BadAudio, ClipSource
from conftest import reference_decode, write_wav

# (subtype, container, channels, rate): every encoding of docs/method.md §2, mono and stereo,
# plain and WAVE_FORMAT_EXTENSIBLE headers, 8 to 96 kHz.
ENCODINGS = [
    ('PCM_U8', 'WAV', 1, 8000),
    ('PCM_U8', 'WAVEX', 2, 11025),
    ('PCM_16', 'WAV', 2, 44100),
    ('PCM_16', 'WAVEX', 1, 16000),
    ('PCM_24', 'WAV', 1, 96000),
    ('PCM_24', 'WAVEX', 2, 32000),
    ('PCM_32', 'WAV', 2, 48000),
    ('PCM_32', 'WAVEX', 1, 22050),
    ('FLOAT', 'WAV', 1, 22050),
    ('FLOAT', 'WAVEX', 2, 44100),
    ('DOUBLE', 'WAV', 1, 24000),
    ('IMA_ADPCM', 'WAV', 1, 11025),
    ('IMA_ADPCM', 'WAV', 2, 8000),
    ('MS_ADPCM', 'WAV', 1, 48000),
    ('MS_ADPCM', 'WAV', 2, 22050),
]


def signal(n, fs, ch, seed=0):
    """A (n, ch) test signal in [-0.7, 0.7]: tones plus a little noise, never all zero."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    cols = [0.4 * np.sin(2 * np.pi * (300 + 170 * c) * t + c) + 0.2 * np.sin(2 * np.pi * 1234 * t)
            + 0.05 * rng.standard_normal(n) for c in range(ch)]
    return np.clip(np.stack(cols, axis=1), -0.7, 0.7)


def write_encoded(path, subtype, container, ch, fs, seconds=0.15, seed=0):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sf.write(path, signal(int(seconds * fs), fs, ch, seed), fs, subtype=subtype, format=container)
    return path


def wav_format_tag(path):
    with open(path, 'rb') as f:
        data = f.read(64)
    i = data.index(b'fmt ')
    return struct.unpack('<H', data[i + 8:i + 10])[0]


@pytest.mark.parametrize('subtype,container,ch,fs', ENCODINGS)
def test_reader_matches_independent_decoder(tmp_path, subtype, container, ch, fs):
    path = write_encoded(str(tmp_path / 'a.wav'), subtype, container, ch, fs)
    if container == 'WAVEX':
        assert wav_format_tag(path) == 0xFFFE  # really WAVE_FORMAT_EXTENSIBLE
    mono, got_fs = audio.read_mono(ClipSource(path))
    ref, ref_fs = reference_decode(path)
    assert got_fs == ref_fs == fs
    assert mono.dtype == np.float64 and mono.ndim == 1
    assert len(mono) == len(ref)
    np.testing.assert_allclose(mono, ref.mean(axis=1), rtol=0, atol=1e-12)


def test_truncated_data_chunk(tmp_path):
    path = write_encoded(str(tmp_path / 'a.wav'), 'PCM_16', 'WAV', 1, 16000, seconds=0.5)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    assert sf.info(path).frames > 0  # libsndfile alone would read the shorter audio silently
    for fn in (audio.probe, audio.read_mono):
        with pytest.raises(BadAudio, match=r'truncated: the data chunk declares 16000 bytes '
                                           r'but the file holds'):
            fn(ClipSource(path))


@pytest.mark.parametrize('cut', [6, 20, 40])
def test_truncated_in_header(tmp_path, cut):
    path = write_encoded(str(tmp_path / 'a.wav'), 'PCM_16', 'WAV', 1, 16000)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:cut])
    with pytest.raises(BadAudio, match='truncated'):
        audio.probe(ClipSource(path))


@pytest.mark.parametrize('placeholder', [0xFFFFFFFF, 0x7FFFF000])
def test_streaming_data_size_is_not_truncation(tmp_path, placeholder):
    """Data sizes written by streaming writers (0xFFFFFFFF; SoX to a pipe: 0x7FFFF000) are not
    judged, and neither is a wrong RIFF size; libsndfile reads the audio present."""
    path = write_encoded(str(tmp_path / 'a.wav'), 'PCM_16', 'WAV', 1, 16000)
    with open(path, 'rb') as f:
        data = bytearray(f.read())
    i = data.index(b'data')
    data[i + 4:i + 8] = struct.pack('<I', placeholder)
    data[4:8] = struct.pack('<I', min(placeholder + 36, 0xFFFFFFFF))
    with open(path, 'wb') as f:
        f.write(data)
    audio.probe(ClipSource(path))
    mono, _ = audio.read_mono(ClipSource(path))
    assert len(mono) == int(0.15 * 16000)


def test_bad_input_reasons(tmp_path):
    def reason(path):
        with pytest.raises(BadAudio) as e:
            audio.probe(ClipSource(path))
        with pytest.raises(BadAudio) as e2:
            audio.read_mono(ClipSource(path))
        assert str(e.value) == str(e2.value)
        return str(e.value)

    assert reason(str(tmp_path / 'nope.wav')) == 'missing'
    (tmp_path / 'empty.wav').write_bytes(b'')
    assert reason(str(tmp_path / 'empty.wav')) == 'empty file (0 bytes)'
    write_wav(tmp_path / 'hdr.wav', np.zeros(0, np.int16))
    assert reason(str(tmp_path / 'hdr.wav')) == 'empty audio (0 frames)'
    (tmp_path / 'text.wav').write_text('this is not audio\n' * 20)
    assert reason(str(tmp_path / 'text.wav')).startswith('cannot read audio (libsndfile: ')
    os.mkdir(tmp_path / 'dir.wav')
    assert reason(str(tmp_path / 'dir.wav')) == 'not a regular file'


def test_silent_and_nonfinite(tmp_path):
    write_wav(tmp_path / 'zero.wav', np.zeros((300, 2), np.int16))
    audio.probe(ClipSource(str(tmp_path / 'zero.wav')))  # found only by decoding
    with pytest.raises(BadAudio, match=r'entirely digital silence \(every sample is 0\)'):
        audio.read_mono(ClipSource(str(tmp_path / 'zero.wav')))
    x = np.full(300, 0.1, np.float32)
    x[17] = np.nan
    sf.write(str(tmp_path / 'nan.wav'), x, 8000, subtype='FLOAT')
    with pytest.raises(BadAudio, match='NaN or infinite'):
        audio.read_mono(ClipSource(str(tmp_path / 'nan.wav')))


def test_stereo_cancelling_to_zero_is_silent(tmp_path):
    s = (np.arange(1, 301) % 200 + 1).astype(np.int16)
    write_wav(tmp_path / 'c.wav', np.stack([s, -s], axis=1))
    with pytest.raises(BadAudio, match='silence'):
        audio.read_mono(ClipSource(str(tmp_path / 'c.wav')))


def test_zip_member_source(tmp_path):
    path = write_encoded(str(tmp_path / 'a.wav'), 'PCM_24', 'WAV', 2, 22050)
    zpath = str(tmp_path / 'a.zip')
    with zipfile.ZipFile(zpath, 'w', zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, 'top/audio/a.wav')
    src = ClipSource(zpath, 'top/audio/a.wav')
    assert src.display == zpath + ':top/audio/a.wav'
    size, ident = src.identity()
    assert size == os.path.getsize(path) and 'top/audio/a.wav' in ident
    audio.probe(src)
    a, fs = audio.read_mono(src)
    b, _ = audio.read_mono(ClipSource(path))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(BadAudio, match='^missing$'):
        audio.probe(ClipSource(zpath, 'top/audio/b.wav'))


def test_identity_changes_with_content(tmp_path):
    path = write_wav(tmp_path / 'a.wav', np.arange(1, 100, dtype=np.int16))
    _, k1 = ClipSource(path).identity()
    os.utime(path, ns=(1, 10 ** 18))
    _, k2 = ClipSource(path).identity()
    assert k1 != k2
    rates = [16000, 44100]
    p1 = convert.cache_path('/c', ClipSource(path), k1, rates, trim=False)
    assert p1 != convert.cache_path('/c', ClipSource(path), k2, rates, trim=False)
    assert p1 != convert.cache_path('/c', ClipSource(path), k1, rates, trim=True)
    assert p1 != convert.cache_path('/c', ClipSource(path), k1, [16000], trim=False)
    assert os.path.basename(p1).startswith('a-') and p1.endswith('.npy')


def test_pack_unpack_clips(tmp_path):
    clips = [np.arange(5, dtype=np.int16), np.zeros(0, np.int16), np.array([-32768, 32767],
                                                                          dtype=np.int16)]
    packed = convert.pack_clips(clips)
    path = str(tmp_path / 'c.npy')
    np.save(path, packed)
    for j, c in enumerate(clips):
        got = convert.unpack_clip(np.load(path, mmap_mode='r'), 3, j)
        assert got.dtype == np.int16 and isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, c)
    with pytest.raises(ValueError):
        convert.unpack_clip(packed[:-1], 3, 0)
    np.save(path, packed[:-1])
    with pytest.raises(npzio.UserError, match='cannot read cached clip'):
        convert.load_cached(path, [8000, 16000, 44100], 16000)


@pytest.mark.parametrize('src_fs,fs', [(44100, 16000), (8000, 44100), (96000, 22050),
                                       (11025, 8000), (16000, 16000)])
def test_convert_clip_length_and_values(src_fs, fs):
    x = signal(int(0.2 * src_fs), src_fs, 1)[:, 0]
    y = audio.convert_clip(x, src_fs, fs, trim=False)
    assert y.dtype == np.int16
    assert abs(len(y) - len(x) * fs / src_fs) <= 1
    g = np.gcd(src_fs, fs)
    want = x if src_fs == fs else scipy.signal.resample_poly(x, fs // g, src_fs // g)
    want = np.clip(np.round(want * 32768), -32768, 32767)
    assert np.max(np.abs(y - want)) == 0


def test_convert_clip_trim_and_clipping():
    x = np.array([0.0, 0.0, 0.5, -1.5, 2.0, 1e-9, 0.0])
    np.testing.assert_array_equal(audio.convert_clip(x, 8000, 8000, trim=True),
                                  [16384, -32768, 32767])
    assert len(audio.convert_clip(x, 8000, 8000, trim=False)) == 7


# --------------------------------------------------------------------------------------------
# --check


def _dataset(path):
    folds = {1: ([np.ones(16000, np.int16), np.ones(8000, np.int16)], [0, 1]),
             3: ([np.ones(4000, np.int16)], [1])}
    npzio.save_sound_npz(path, folds, 16000, ['a', 'b', 'c'])
    return path


def test_check_file(tmp_path):
    path = _dataset(str(tmp_path / 'wav16.npz'))
    lines = pipeline.check_file(path)
    text = '\n'.join(lines)
    assert '16000 Hz' in lines[0] and '3 classes' in lines[0] and '2 folds (1 3)' in lines[0]
    assert '3 clips' in lines[0] and 'load without pickle' in lines[0]
    table = lines[lines.index('clips per fold and class:') + 2:]
    assert table[0].split() == ['0', 'a', '1', '0', '1']
    assert table[1].split() == ['1', 'b', '1', '1', '2']
    assert table[2].split() == ['2', 'c', '0', '0', '0']
    assert table[3].split() == ['total', '2', '1', '3']
    assert 'classes with no clip: c' in text
    assert 'min 0.250  median 0.500  mean 0.583  max 1.000' in text


def test_check_refuses_pickle(tmp_path):
    legacy = str(tmp_path / 'wav16.npz')
    np.savez(legacy, fold1={'sounds': [np.ones(3, np.int16)], 'labels': [0]})
    with pytest.raises(npzio.UserError, match='legacy pickled'):
        pipeline.check_file(legacy)
    extra = _dataset(str(tmp_path / 'x.npz'))
    with np.load(extra) as z:
        arrays = {k: z[k] for k in z.files}
    arrays['notes'] = np.array([{'a': 1}], dtype=object)
    np.savez(extra, **arrays)
    with pytest.raises(npzio.UserError, match='needs pickle'):
        pipeline.check_file(extra)
    with pytest.raises(npzio.UserError, match='no such file'):
        pipeline.check_file(str(tmp_path / 'none.npz'))


def test_remove_stale_temps(tmp_path):
    for name in ('.wav16.npz.abc123.tmp.npz', '.skipped.txt.x1.tmp', 'wav16.npz', 'keep.tmp',
                 '.other.npz.abc.tmp.npz'):
        (tmp_path / name).write_bytes(b'x')
    pipeline.remove_stale_temps(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['.other.npz.abc.tmp.npz', 'keep.tmp', 'wav16.npz']
