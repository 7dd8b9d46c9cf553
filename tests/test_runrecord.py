"""runrecord.processor_name: the processor a run record names."""
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
