"""Shared test helpers and fixtures.

- :func:`write_wav`: write a small synthetic WAV (16-bit PCM by default) for tests.
- ``esc10_npz_dir`` (session): runs ``esc_gen.py`` once on the real ESC-10 clips in ``$ESC50_DIR``
  (default ``<repo>/../shared/data/ESC-50-esc10``) and returns the DATA dir, so that
  ``DATA/esc10/wav44.npz``, ``DATA/esc10/wav16.npz`` and ``DATA/esc50/wav*.npz`` exist. Skipped,
  naming ESC50_DIR, when that folder is missing. Takes about 6 s.
- :func:`kernel_params`: the 'numpy' / 'numba' parameters of a CPU-kernel fixture.
- :func:`reference_decode`: an independent WAV decoder (Python's ``wave`` module, a RIFF parser,
  IMA / MS ADPCM decoders; no libsndfile), the reference of the generator tests.
"""
import os
import sys

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

ESC50_DIR = os.environ.get('ESC50_DIR') or os.path.normpath(
    os.path.join(REPO_ROOT, '..', 'shared', 'data', 'ESC-50-esc10'))


def kernel_params(numba_module):
    """``['numpy', 'numba']`` as parameters of a fixture that picks a CPU kernel; 'numba' is
    skipped, saying why, where ``numba_module`` (the module's own ``numba``, None when it did not
    import) is missing."""
    return ['numpy', pytest.param('numba', marks=pytest.mark.skipif(
        numba_module is None, reason='numba is not installed (requirements.txt installs it)'))]


def write_wav(path, samples, fs=44100, subtype='PCM_16'):
    """Write ``samples`` to the WAV file ``path`` and return ``path``.

    ``samples``: int16 array (written as is) or float array in [-1, 1); shape (n,) for mono or
    (n, channels). Parent directories are created.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sf.write(path, np.asarray(samples), fs, subtype=subtype, format='WAV')
    return path


@pytest.fixture(scope='session')
def esc10_npz_dir(tmp_path_factory):
    """DATA dir (str) produced by ``esc_gen.main([DATA, '--source', ESC50_DIR])``."""
    if not os.path.isdir(ESC50_DIR):
        pytest.skip('ESC50_DIR=%s not found (set ESC50_DIR to an ESC-50 checkout, e.g. the '
                    'ESC-10 subset)' % ESC50_DIR)
    import esc_gen
    data = str(tmp_path_factory.mktemp('escdata'))
    rc = esc_gen.main([data, '--source', ESC50_DIR])
    assert rc == 0, 'esc_gen.py failed on %s' % ESC50_DIR
    return data


# ---------------------------------------------------------------------------------------------
# An independent WAV decoder (no libsndfile), the reference the generator tests compare against:
# plain PCM through Python's ``wave`` module; float, WAVE_FORMAT_EXTENSIBLE and IMA / MS ADPCM by
# parsing the RIFF chunks here.

_IMA_STEPS = [
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66,
    73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408,
    449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066,
    2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630,
    9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794,
    32767]
_IMA_INDEX = [-1, -1, -1, -1, 2, 4, 6, 8]
_MS_ADAPT = [230, 230, 230, 230, 307, 409, 512, 614, 768, 614, 512, 409, 307, 230, 230, 230]


def riff_chunks(data):
    """{chunk id: bytes} of a little-endian RIFF/WAVE file (first occurrence of each id)."""
    import struct
    assert data[:4] == b'RIFF' and data[8:12] == b'WAVE', 'not a RIFF/WAVE file'
    chunks, pos = {}, 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack('<I', data[pos + 4:pos + 8])[0]
        chunks.setdefault(cid, data[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)
    return chunks


def _ima_block(block, ch):
    import struct
    out = [[] for _ in range(ch)]
    pred, index = [], []
    for c in range(ch):
        p, i = struct.unpack('<hB', block[4 * c:4 * c + 3])
        pred.append(p)
        index.append(i)
        out[c].append(p)
    body = block[4 * ch:]
    for g in range(len(body) // (4 * ch)):
        for c in range(ch):
            for byte in body[(g * ch + c) * 4:(g * ch + c) * 4 + 4]:
                for nib in (byte & 0x0F, byte >> 4):
                    step = _IMA_STEPS[index[c]]
                    diff = step >> 3
                    if nib & 1:
                        diff += step >> 2
                    if nib & 2:
                        diff += step >> 1
                    if nib & 4:
                        diff += step
                    pred[c] = max(-32768, min(32767, pred[c] - diff if nib & 8 else pred[c] + diff))
                    index[c] = max(0, min(88, index[c] + _IMA_INDEX[nib & 7]))
                    out[c].append(pred[c])
    return np.array(out, dtype=np.int64).T


def _ms_block(block, ch, coefs):
    import struct
    pos = 0
    bpred = list(block[:ch])
    pos += ch
    delta = list(struct.unpack('<%dh' % ch, block[pos:pos + 2 * ch]))
    pos += 2 * ch
    s1 = list(struct.unpack('<%dh' % ch, block[pos:pos + 2 * ch]))
    pos += 2 * ch
    s2 = list(struct.unpack('<%dh' % ch, block[pos:pos + 2 * ch]))
    pos += 2 * ch
    out = [[s2[c], s1[c]] for c in range(ch)]
    c = 0
    for byte in block[pos:]:
        for nib in (byte >> 4, byte & 0x0F):
            c1, c2 = coefs[bpred[c]]
            predict = (s1[c] * c1 + s2[c] * c2) >> 8
            signed = nib - 16 if nib & 8 else nib
            new = max(-32768, min(32767, predict + signed * delta[c]))
            s2[c], s1[c] = s1[c], new
            delta[c] = max(16, (_MS_ADAPT[nib] * delta[c]) >> 8)
            out[c].append(new)
            c = (c + 1) % ch
    return np.array(out, dtype=np.int64).T


def reference_decode(path):
    """Decode a WAV without libsndfile -> (float64 array (frames, channels) at full scale 1, fs).

    Plain integer PCM goes through Python's ``wave`` module; 32/64-bit float,
    WAVE_FORMAT_EXTENSIBLE and IMA / MS ADPCM are parsed here (ADPCM block by block, every sample
    of every block, as libsndfile and FFmpeg decode them).
    """
    import struct
    import wave
    with open(path, 'rb') as f:
        data = f.read()
    chunks = riff_chunks(data)
    fmt = chunks[b'fmt ']
    tag, ch, fs, _, block_align, bits = struct.unpack('<HHIIHH', fmt[:16])
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the real tag starts the SubFormat GUID
        tag = struct.unpack('<H', fmt[24:26])[0]
    raw = chunks[b'data']
    if tag == 1 and fmt[:2] == b'\x01\x00':  # plain PCM: Python's wave module
        with wave.open(path, 'rb') as w:
            ch, width, fs = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
        tag, bits = 1, 8 * width
    if tag == 1:
        width = bits // 8
        if width == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128
        elif width == 2:
            x = np.frombuffer(raw, '<i2') / 32768.0
        elif width == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int64)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            x = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
        elif width == 4:
            x = np.frombuffer(raw, '<i4') / float(1 << 31)
        else:
            raise ValueError('%d-bit PCM' % bits)
        return x.reshape(-1, ch).astype(np.float64), fs
    if tag == 3:
        x = np.frombuffer(raw, '<f4' if bits == 32 else '<f8').astype(np.float64)
        return x.reshape(-1, ch), fs
    blocks = [raw[i:i + block_align] for i in range(0, len(raw) - block_align + 1, block_align)]
    if tag == 0x11:
        x = np.concatenate([_ima_block(b, ch) for b in blocks])
    elif tag == 0x02:
        n_coef = struct.unpack('<H', fmt[20:22])[0]
        coefs = [struct.unpack('<hh', fmt[22 + 4 * i:26 + 4 * i]) for i in range(n_coef)]
        x = np.concatenate([_ms_block(b, ch, coefs) for b in blocks])
    else:
        raise ValueError('format tag 0x%04x' % tag)
    return x / 32768.0, fs
