"""The entry points make glibc keep freed memory for the next step (allocator.py), and leave the
allocator alone where the environment configures it."""
import os
import platform
import subprocess
import sys

import pytest

import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocate 256 MiB, touch it, free it: how far did the resident set fall (MiB)?
_PROBE = '''
import {entry}, allocator, numpy as np
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * {page} / 2 ** 20
a = np.ones(2 ** 26, dtype=np.float32)
before = rss()
del a
print(allocator.ACTIVE, before - rss())
'''

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc only')


def _child(entry, **env):
    base = {k: v for k, v in os.environ.items()
            if k != allocator.SYSTEM_MALLOC_ENV and not k.startswith('MALLOC_')
            and k != 'GLIBC_TUNABLES'}
    base.update(env)
    code = _PROBE.format(entry=entry, page=os.sysconf('SC_PAGE_SIZE'))
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=base, capture_output=True,
                         text=True, check=True)
    active, fell = out.stdout.split()
    return active == 'True', float(fell)


@pytest.mark.parametrize('entry', ['main', 'bench', 'predict'])
def test_entry_points_keep_a_freed_array_in_the_process(entry):
    active, fell = _child(entry)
    assert active
    assert fell < 16  # the 256 MiB stay (glibc would unmap them at once by default)


@pytest.mark.parametrize('env', [{allocator.SYSTEM_MALLOC_ENV: '1'},
                                 {'MALLOC_MMAP_THRESHOLD_': '1048576'},
                                 {'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=1048576'}])
def test_the_allocator_is_left_alone_where_the_environment_configures_it(env):
    active, fell = _child('allocator', **env)
    assert not active
    assert fell > 240  # glibc's own behaviour: the mmap'd array goes back at once
