"""bench.py: the part timer's bookkeeping, the JSON it prints, and its bad-input handling."""
import json

import numpy as np
import pytest

import compat  # noqa: F401
import chainer

import bench
import fastconv
import intermix


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_part_timer_charges_nested_time_to_the_inner_part_only():
    clock = FakeClock()
    timer = bench.PartTimer(clock=clock)
    with timer.part('forward'):
        clock.t += 1.0
        with timer.part('mixing'):
            clock.t += 0.25
            with timer.part('mixing'):  # compute_gain inside Mixer.__call__: counted once
                clock.t += 0.5
        clock.t += 2.0
    with timer.part('backward'):
        clock.t += 4.0
    assert timer.totals == {'forward': 3.0, 'mixing': 0.75, 'backward': 4.0}
    assert sum(timer.totals.values()) == clock.t
    timer.reset()
    assert timer.totals == {}


def test_part_timer_wrap_returns_the_result_and_times_exceptions():
    clock = FakeClock()
    timer = bench.PartTimer(clock=clock)

    def work(a, b=1):
        clock.t += 2.0
        return a + b
    assert timer.wrap('update', work)(1, b=2) == 3

    def boom():
        clock.t += 1.0
        raise ValueError('x')
    with pytest.raises(ValueError):
        timer.wrap('update', boom)()
    assert timer.totals == {'update': 3.0} and timer.stack == []


def test_summary_of_known_values():
    s = bench.summary([4.0, 1.0, 3.0, 2.0])
    assert s == {'median': 2.5, 'min': 1.0, 'max': 4.0, 'p25': 1.75, 'p75': 3.25, 'n': 4}


ARGS = ['--netType', 'envnet', '--gpu', '-1', '--batchSize', '2', '--steps', '2',
        '--warmupSteps', '1', '--testBatches', '1', '--testBatchSize', '1', '--nCrops', '2',
        '--iterBatches', '3', '--clips', '12', '--seed', '3']


def run_bench(args, capsys):
    rc = bench.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_compare_prints_both_paths_their_ratios_and_restores_everything(capsys, tmp_path):
    originals = (intermix.phase_shift, intermix.Mixer.__call__, chainer.Variable.backward)
    out_file = tmp_path / 'b.json'
    rc, out, err = run_bench(['--learning', 'intermix', '--compare', '--out', str(out_file),
                              *ARGS], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert json.load(open(out_file)) == result
    for path in ('stock', 'fast'):
        train = result['train'][path]
        assert train['clips_per_step'] == 4  # 2 pairs -> [x_i; x_j]
        assert train['step_s']['n'] == 2
        assert train['step_s']['min'] <= train['step_s']['median'] <= train['step_s']['max']
        parts = train['parts_s']
        assert {'data', 'mixing', 'forward', 'loss', 'backward', 'update'} <= set(parts)
        assert all(v >= 0 for v in parts.values())
        # the parts' medians cannot exceed the slowest step
        assert sum(parts.values()) <= train['step_s']['max'] * 1.0001
        assert 0 < train['mixing_share'] < 1
        assert result['test'][path]['crops'] == 2  # one clip of 2 crops after the warm-up clip
    ratio = result['train']['fast']['clips_per_s']['median'] / \
        result['train']['stock']['clips_per_s']['median']
    assert result['speedup']['train_clips_per_s'] == pytest.approx(ratio, rel=1e-2)
    assert result['iterator']['workers_0']['clips_per_s'] > 0
    assert result['iterator']['workers_2']['clips_per_s'] > 0
    # The whole loop: main.py's own run of 2 epochs on the synthetic clips written as a data
    # file (12 training clips: 6 pairs, 3 steps of 2 pairs), its test on fold 1's 2 clips.
    loop = result['loop']
    assert (loop['epochs'], loop['steps_per_epoch']) == (2, 3)
    assert loop['predicted_s'] == pytest.approx(
        train['step_s']['median'] * 3 * 2 + loop['test_s_predicted'], abs=0.02)
    assert loop['ratio_to_predicted'] == pytest.approx(loop['seconds'] / loop['predicted_s'],
                                                       rel=0.01)
    assert loop['epochs_per_min'] == pytest.approx(120 / loop['seconds'], rel=0.01)
    assert 'split 1: final test error' in err  # main.py's lines went to stderr, not the JSON
    # the instrumentation and the conv path are put back
    assert (intermix.phase_shift, intermix.Mixer.__call__, chainer.Variable.backward) == originals
    assert fastconv.enabled()


def test_standard_learning_has_no_mixing_part(capsys):
    rc, out, err = run_bench(['--learning', 'standard', '--stockConv', *ARGS,
                              '--loopEpochs', '0'], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert 'loop' not in result
    assert list(result['train']) == ['stock']
    assert result['train']['stock']['clips_per_step'] == 2
    assert 'mixing' not in result['train']['stock']['parts_s']
    assert result['train']['stock']['mixing_share'] == 0
    assert 'speedup' not in result


@pytest.mark.parametrize('extra, message', [
    (['--steps', '0'], '--steps must be at least 1'),
    (['--loopEpochs', '-1'], '--loopEpochs must be >= 0'),
    (['--compare', '--stockConv'], 'drop --stockConv'),
    (['--eligible', '9'], '--eligible 9'),
])
def test_bad_options_exit_2_with_one_line(extra, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(['--learning', 'intermix', *ARGS, *extra])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_main_argv_drops_the_bench_options_in_both_spellings():
    argv = ['--netType', 'envnet', '--steps', '3', '--compare', '--out=x.json', '--seed', '3',
            '--loopEpochs', '2', '--nEpochs=9', '--data', 'D', '--strongAugment']
    assert bench.main_argv(argv, {**bench.BENCH_ONLY, **bench.LOOP_SET}) == [
        '--netType', 'envnet', '--seed', '3', '--strongAugment']


def test_missing_data_folder_is_a_user_error(capsys, tmp_path):
    rc, out, err = run_bench(['--learning', 'intermix', '--data', str(tmp_path), *ARGS], capsys)
    assert rc == 2 and out == ''
    last = err.strip().splitlines()[-1]
    assert last.startswith('bench.py: error:') and str(tmp_path) in last and 'Traceback' not in err


def test_synthetic_clips_are_five_seconds_of_int16_with_every_class():
    (sounds, labels), (test_sounds, test_labels) = bench.synthetic_data(20, 10, 16000)
    assert len(sounds) == 20 and all(s.dtype == np.int16 and s.shape == (80000,) for s in sounds)
    assert sorted(set(labels.tolist())) == list(range(10))
    assert len(test_sounds) == 4 and np.all(np.abs(sounds[0]) <= 32767)


def test_layer_profile_charges_each_function_its_own_time_only():
    t = [0.0]
    hook = bench.LayerProfile(clock=lambda: t[0])

    class Fn:
        def __init__(self, label):
            self.label = label
    outer, inner = Fn('Outer'), Fn('Inner')
    for _ in range(2):  # two steps: Outer's backward (5 s) applies Inner (3 s of it)
        hook.backward_preprocess(outer, None, None)
        t[0] += 1.0
        hook.forward_preprocess(inner, None)
        t[0] += 3.0
        hook.forward_postprocess(inner, None)
        t[0] += 1.0
        hook.backward_postprocess(outer, None, None)
    assert hook.summary(2) == {'Inner (forward)': {'ms_per_step': 3000.0, 'calls_per_step': 1.0},
                               'Outer (backward)': {'ms_per_step': 2000.0,
                                                    'calls_per_step': 1.0}}


def test_profile_steps_report_every_function_of_the_step(capsys):
    rc, out, err = run_bench(['--learning', 'standard', *ARGS, '--loopEpochs', '0',
                              '--profileSteps', '1'], capsys)
    assert rc == 0, err
    profile = json.loads(out)['profile']['fast']
    assert 'LinearFunction (forward)' in profile and 'LinearGradWeight (forward)' in profile
    times = [v['ms_per_step'] for v in profile.values()]
    assert times == sorted(times, reverse=True) and all(v >= 0 for v in times)
