"""Reading one audio file and converting it to an int16 dataset clip (docs/method.md §2).

Shared by every dataset generator (``esc_gen.py``, ``urbansound_gen.py``) through
:mod:`datagen.pipeline`.

Reader
------
:func:`read_mono` decodes one WAV with libsndfile (through ``soundfile``) to float64 at full
scale +-1 and downmixes to mono by the mean over channels. libsndfile decodes every encoding the
two datasets contain directly: 8-bit unsigned, 16-, 24- and 32-bit integer PCM, 32- and 64-bit
float, IMA and MS ADPCM, any channel count and sample rate, plain ``WAVE_FORMAT_PCM`` and
``WAVE_FORMAT_EXTENSIBLE`` headers (RIFF, RIFX and RF64). The BC-learning reference converted
every file with FFmpeg first; libsndfile needs no external program and no intermediate files.
ADPCM is decoded block by block, the last block's padding included (libsndfile ignores the
``fact`` chunk's sample count), as FFmpeg does.

Bad input is reported as :class:`BadAudio` with a one-line reason:

- ``missing``: the file (or zip member) does not exist;
- ``empty file (0 bytes)``, ``empty audio (0 frames)``;
- ``truncated``: the file starts as a RIFF/WAVE file but ends inside the header, or the ``data``
  chunk declares more bytes than follow its header in the file (libsndfile would silently read
  the shorter audio: its frame count is computed from the bytes present, so comparing it with
  the frames read cannot catch this; :func:`riff_check` parses the chunk headers instead). A
  ``data`` size of 0 or 0xFFFFFFFF (written by streaming encoders, and by RF64) is not judged;
- ``cannot read audio``: not a format libsndfile decodes (text, another container, an unknown
  WAV codec), or a decoding error;
- ``entirely digital silence``: every sample is 0 (or, after conversion, every int16 sample);
- ``NaN or infinite samples`` (float WAVs).

Conversion
----------
:func:`convert_clip`: resample the mono float64 clip with ``scipy.signal.resample_poly`` (up/down =
target/source rate reduced by their gcd; skipped when equal), convert to int16 with
``clip(round(x * 32768))``, and, when asked (ESC), trim leading and trailing samples equal to 0.
"""
import functools
import io
import math
import os
import struct
import zipfile

import numpy as np
import scipy.signal
import soundfile as sf

from datagen.npzio import one_line

# A ``data`` chunk size at or above this is a streaming writer's placeholder (0xFFFFFFFF; SoX
# writing to a pipe puts 0x7FFFF000), not a promise: such files are not judged truncated.
UNKNOWN_DATA_SIZE = 0x7FFF0000


class BadAudio(Exception):
    """A source file that cannot be converted; ``str(e)`` is the one-line reason."""


# --------------------------------------------------------------------------------------------
# Sources: a file on disk or a member of a zip archive (picklable, for the worker processes)


_ZIPS = {}  # (pid, zip path) -> zipfile.ZipFile; per process, as a forked child must not share
            # the parent's file offset


def _zip(path):
    key = (os.getpid(), path)
    if key not in _ZIPS:
        _ZIPS[key] = zipfile.ZipFile(path)
    return _ZIPS[key]


class ClipSource:
    """One audio file: ``ClipSource(path)`` or ``ClipSource(zip_path, member)``."""

    def __init__(self, path, member=None):
        self.path = os.fspath(path)
        self.member = member

    @property
    def display(self):
        """Name used in messages and reports."""
        return self.path if self.member is None else '%s:%s' % (self.path, self.member)

    def identity(self):
        """(size in bytes, cache-key text); BadAudio('missing') when absent."""
        if self.member is None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                raise BadAudio('missing') from None
            except OSError as e:
                raise BadAudio('cannot access (%s)' % one_line(e)) from None
            if not os.path.isfile(self.path):
                raise BadAudio('not a regular file')
            return st.st_size, '%s|%d|%d' % (os.path.abspath(self.path), st.st_size,
                                             st.st_mtime_ns)
        try:
            info = _zip(self.path).getinfo(self.member)
        except KeyError:
            raise BadAudio('missing') from None
        except (OSError, zipfile.BadZipFile) as e:
            raise BadAudio('cannot read from zip (%s)' % one_line(e)) from None
        return info.file_size, 'zip|%s|%s|%d|%08x' % (os.path.abspath(self.path), self.member,
                                                      info.file_size, info.CRC)

    def open(self):
        """A seekable binary file object (the caller closes it)."""
        if self.member is None:
            return open(self.path, 'rb')
        try:
            return io.BytesIO(_zip(self.path).read(self.member))
        except (zipfile.BadZipFile, EOFError, KeyError) as e:
            raise OSError('cannot read from zip (%s)' % one_line(e)) from None


# --------------------------------------------------------------------------------------------
# Reading


def riff_check(f, size):
    """Raise BadAudio('truncated: ...') if the RIFF/WAVE file ``f`` (``size`` bytes) is cut short.

    Walks the chunk headers up to the ``data`` chunk. Files that are not RIFF/RIFX/RF64 WAVE are
    left to libsndfile. A ``data`` size of 0 or >= UNKNOWN_DATA_SIZE (unknown length) is not
    judged.
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b'RIFF', b'RIFX', b'RF64') or head[8:12] != b'WAVE':
        if len(head) >= 4 and head[:4] in (b'RIFF', b'RIFX', b'RF64') and len(head) < 12:
            raise BadAudio('truncated: the file ends inside the RIFF header (%d bytes)' % size)
        return
    endian = '>' if head[:4] == b'RIFX' else '<'
    pos = 12
    while True:
        hdr = f.read(8)
        if len(hdr) < 8:
            raise BadAudio('truncated: the file ends at byte %d, before the data chunk' % size)
        cid = hdr[:4]
        (length,) = struct.unpack(endian + 'I', hdr[4:])
        pos += 8
        if cid == b'data':
            if length == 0 or length >= UNKNOWN_DATA_SIZE:
                return
            available = size - pos
            if length > available:
                raise BadAudio('truncated: the data chunk declares %d bytes but the file holds '
                               '%d (%.0f%%)' % (length, max(available, 0),
                                                100.0 * max(available, 0) / length))
            return
        skip = length + (length & 1)
        if pos + length > size:
            raise BadAudio("truncated: the file ends inside the %r chunk (byte %d of %d)"
                           % (cid.decode('latin-1'), size, pos + length))
        body = f.read(skip)
        if len(body) < length:
            raise BadAudio("truncated: the file ends inside the %r chunk"
                           % cid.decode('latin-1'))
        pos += skip


def _libsndfile_reason(e):
    text = getattr(e, 'error_string', None) or one_line(e)
    return 'cannot read audio (libsndfile: %s)' % ' '.join(str(text).split())


def _decode_checked(src, decode):
    """(identity text, ``decode(f)``) for ``src`` opened as the file object f, after the size and
    RIFF checks; every read failure becomes BadAudio (module docstring)."""
    size, ident = src.identity()
    if size == 0:
        raise BadAudio('empty file (0 bytes)')
    try:
        with src.open() as f:
            riff_check(f, size)
            f.seek(0)
            return ident, decode(f)
    except BadAudio:
        raise
    except sf.LibsndfileError as e:
        raise BadAudio(_libsndfile_reason(e)) from None
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as e:
        raise BadAudio('cannot read audio (%s)' % one_line(e)) from None


def _check_frames(frames, fs):
    if frames == 0:
        raise BadAudio('empty audio (0 frames)')
    if fs <= 0:
        raise BadAudio('invalid sample rate %d' % fs)


def probe(src):
    """Check ``src`` without decoding it -> cache-key text; BadAudio when it is bad.

    Catches missing, empty, truncated and undecodable files and files with 0 frames.
    """
    ident, info = _decode_checked(src, sf.info)
    _check_frames(info.frames, info.samplerate)
    return ident


def read_mono(src):
    """Decode ``src`` -> (mono float64 array, sample rate); BadAudio (module docstring) when bad."""
    _, (data, fs) = _decode_checked(
        src, lambda f: sf.read(f, dtype='float64', always_2d=True))
    _check_frames(data.shape[0], fs)
    mono = data.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise BadAudio('NaN or infinite samples')
    if not np.any(mono):
        raise BadAudio('entirely digital silence (every sample is 0)')
    return mono, int(fs)


# --------------------------------------------------------------------------------------------
# Per-clip conversion


def to_int16(x):
    """Float samples (full scale +-1) -> int16, rounding and clipping: clip(round(x * 32768))."""
    y = np.multiply(x, 32768.0)
    np.round(y, out=y)
    np.clip(y, -32768, 32767, out=y)
    return y.astype(np.int16)


def trim_silence(x):
    """``x[first_nonzero:last_nonzero + 1]``; an empty array when every sample is 0."""
    nz = np.flatnonzero(x)
    if len(nz) == 0:
        return x[:0]
    return x[nz[0]:nz[-1] + 1]


@functools.lru_cache(maxsize=None)
def _lowpass(up, down):
    """The FIR filter ``resample_poly(x, up, down)`` designs (its default window, Kaiser beta 5),
    designed once per rate pair instead of once per clip; passing it as ``window`` gives the
    same output (tested against plain ``resample_poly``)."""
    m = max(up, down)
    h = scipy.signal.firwin(2 * 10 * m + 1, 1.0 / m, window=('kaiser', 5.0))
    h.flags.writeable = False  # resample_poly copies it before scaling
    return h


def convert_clip(mono, src_fs, fs, trim):
    """Mono float64 clip at ``src_fs`` -> int16 clip at ``fs``, trimmed when ``trim``."""
    if fs != src_fs:
        g = math.gcd(int(fs), int(src_fs))
        up, down = fs // g, src_fs // g
        mono = scipy.signal.resample_poly(mono, up, down, window=_lowpass(up, down))
    out = to_int16(mono)
    return trim_silence(out) if trim else out


def checked_clip(mono, src_fs, fs, trim):
    """:func:`convert_clip`, refusing a clip with no non-zero sample left.

    Returns the int16 clip (1-D, at ``fs`` Hz); raises BadAudio('silent at FS Hz after
    conversion to int16 ...') when the conversion leaves nothing but zeros (a very quiet file).
    """
    clip = convert_clip(mono, src_fs, fs, trim)
    if len(clip) == 0 or not np.any(clip):
        raise BadAudio('silent at %d Hz after conversion to int16 (every sample is 0)' % fs)
    return clip


def load_clip(path, fs, trim):
    """One audio file as a dataset clip, exactly as the generators make it (docs/method.md §2.2).

    Args:
        path: the file (any format libsndfile reads: WAV, FLAC, Ogg, AIFF...).
        fs: target sample rate in Hz (int); trim: remove leading and trailing digital silence
            (ESC datasets; ``datagen.registry`` DatasetInfo.trim).

    Returns the int16 clip (1-D array of samples at ``fs``). Raises BadAudio with a one-line
    reason for a missing, empty, truncated, unreadable, non-finite or silent file (module
    docstring).
    """
    mono, src_fs = read_mono(ClipSource(path))
    return checked_clip(mono, src_fs, fs, trim)
