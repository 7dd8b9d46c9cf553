"""Shared test helpers and fixtures.

- :func:`write_wav`: write a small synthetic WAV (16-bit PCM by default) for tests.
- ``esc10_npz_dir`` (session): runs ``esc_gen.py`` once on the real ESC-10 clips in ``$ESC50_DIR``
  (default ``<repo>/../shared/data/ESC-50-esc10``) and returns the DATA dir, so that
  ``DATA/esc10/wav44.npz``, ``DATA/esc10/wav16.npz`` and ``DATA/esc50/wav*.npz`` exist. Skipped,
  naming ESC50_DIR, when that folder is missing. Takes about 6 s.
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
