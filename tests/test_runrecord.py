"""runrecord: the processor and the OpenBLAS kernel a run record names."""
import platform

import runrecord


def test_processor_name_is_the_first_model_name_of_cpuinfo(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: GenuineIntel\n'
                    'model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\n\n'
                    'processor\t: 1\nmodel name\t: Other\n')
    assert runrecord.processor_name(str(info)) == 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz'


def test_processor_name_falls_back_where_cpuinfo_has_none(tmp_path):
    fallback = platform.processor() or platform.machine()
    assert runrecord.processor_name(str(tmp_path / 'missing')) == fallback
    empty = tmp_path / 'cpuinfo'
    empty.write_text('processor\t: 0\nmodel name\t:\n')
    assert runrecord.processor_name(str(empty)) == fallback


def test_processor_id_reads_the_first_processors_family_model_and_stepping(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n'
                    'model name\t: AMD EPYC\nstepping\t: 1\n\n'
                    'processor\t: 1\ncpu family\t: 6\nmodel\t\t: 85\nstepping\t: 7\n')
    assert runrecord.processor_id(str(info)) == 'family 25 model 17 stepping 1'
    assert runrecord.processor_id(str(tmp_path / 'missing')) is None
    arm = tmp_path / 'arm'
    arm.write_text('processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n')
    assert runrecord.processor_id(str(arm)) is None


def test_the_run_record_names_the_openblas_kernel_numpy_loaded():
    import chainer
    import numpy as np
    import fastconv
    core = fastconv.blas_core()
    if 'openblas' in str(getattr(np.__config__, 'CONFIG', '')).lower():
        # NumPy's wheels: OpenBLAS with DYNAMIC_ARCH, which names the kernel it picked
        assert isinstance(core, str) and core and core.isprintable()
    record = runrecord.device_record(chainer.get_device('@numpy'))
    assert record['blas_core'] == core
    assert record['processor_id'] == runrecord.processor_id()


def test_a_resume_on_another_openblas_kernel_is_named():
    base = {'code': {'commit': 'abc', 'diff_sha256': None}, 'versions': runrecord.versions()}
    record = dict(base, device={'kind': 'CPU', 'blas_core': 'SkylakeX'})
    lines = runrecord.record_differences(
        record, now=dict(base, device={'kind': 'CPU', 'blas_core': 'Haswell'}))
    assert len(lines) == 1 and 'SkylakeX when trained, Haswell now' in lines[0]
    same = dict(base, device={'kind': 'CPU', 'blas_core': 'SkylakeX'})
    assert runrecord.record_differences(record, now=same) == []
    # records from before the field, and a GPU on either side, are not compared
    assert runrecord.record_differences(dict(base, device={'kind': 'CPU'}),
                                        now=dict(base, device={'kind': 'CPU',
                                                               'blas_core': 'Haswell'})) == []
    assert runrecord.record_differences(record, now=dict(base, device={'kind': 'GPU'})) == []
