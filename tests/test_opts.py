"""Option resolution: presets, the reference flags, defaults of docs/method.md §6, and flag errors."""
import numpy as np
import pytest

import intermix
import learning
import opts


def parse(*args):
    return opts.parse(['--data', 'D', '--dataset', 'esc10', *args])


def test_learning_presets_set_points_combination_and_weights():
    std = parse('--netType', 'envnetv2')
    assert std.learning == 'standard' and not std.mixing and std.batchSize == 64
    bc = parse('--netType', 'envnetv2', '--learning', 'bc')
    assert (bc.eligible, bc.combination, bc.mixup_type) == ([0], 'linear', 'sound')
    sm = parse('--netType', 'envnetv2', '--learning', 'speechmix')
    assert (sm.eligible, sm.combination) == ([1, 2, 3, 4], 'linear')
    im = parse('--netType', 'envnetv2', '--learning', 'intermix')
    assert (im.eligible, im.combination, im.batchSize) == ([1, 2, 3, 4], 'interference', 32)
    env = parse('--netType', 'envnet', '--learning', 'intermix')
    assert env.eligible == [1, 2, 3]


def test_reference_bc_flag_means_bc_alone_and_intermix_with_hidden_points():
    assert parse('--netType', 'envnetv2', '--BC').learning == 'bc'
    o = parse('--netType', 'envnetv2', '--bc', '--eligible', '1', '2', '3', '4',
              '--mixup_type', 'sound')
    assert (o.learning, o.combination, o.eligible) == ('intermix', 'interference', [1, 2, 3, 4])
    assert parse('--netType', 'envnetv2', '--BC', '--eligible', '0').learning == 'bc'


def test_ablation_presets_of_table_2():
    v = parse('--netType', 'envnetv2', '--learning', 'intermix-vanilla')
    assert (v.eligible, v.combination, v.mixup_type) == ([0], 'interference', 'normal')
    h = parse('--netType', 'envnetv2', '--learning', 'intermix-hidden')
    assert (h.eligible, h.combination, h.mixup_type) == ([1, 2, 3, 4], 'interference', 'normal')
    p = parse('--netType', 'envnetv2', '--learning', 'intermix')
    assert (p.eligible, p.combination, p.mixup_type) == ([1, 2, 3, 4], 'interference', 'sound')
    assert h.nEpochs == 1200  # mixing: the ESC-10 default 600 doubled


def test_mixup_type_normal_uses_plain_mixup_weights():
    opt = parse('--netType', 'envnet', '--learning', 'bc', '--mixup-type', 'normal')
    method = learning.build(opt)
    assert (method.mixup_type, method.combination, method.eligible) == ('normal', 'linear', [0])
    mixer = intermix.Mixer(0, np.array([1, 0]), np.array([0.3, 0.8]),
                           combination=method.combination, mixup_type=method.mixup_type)
    w_i, w_j = mixer.weights(np.ones((2, 8), np.float32))
    np.testing.assert_allclose(w_i, [0.3, 0.8])
    np.testing.assert_allclose(w_j, [0.7, 0.2])


def test_defaults_of_spec_6_with_epochs_doubled_when_mixing():
    o = opts.parse(['--data', 'D', '--dataset', 'esc50', '--netType', 'envnetv2'])
    assert (o.nEpochs, o.LR, o.schedule, o.warmup) == (1000, 0.1, [0.3, 0.6, 0.9], 10)
    o = opts.parse(['--data', 'D', '--dataset', 'esc50', '--netType', 'envnetv2', '--BC'])
    assert o.nEpochs == 2000
    o = opts.parse(['--data', 'D', '--dataset', 'urbansound8k', '--netType', 'envnet'])
    assert (o.nEpochs, o.LR, o.nFolds, o.splits) == (400, 0.01, 10, list(range(1, 11)))
    o = parse('--netType', 'envnetv2', '--learning', 'intermix', '--nEpochs', '7')
    assert o.nEpochs == 7  # explicit values are not doubled
    assert (o.fs, o.inputLength, o.nClasses) == (44100, 66650, 10)


@pytest.mark.parametrize('args, message', [
    (['--netType', 'envnet', '--eligible', '1'], '--eligible needs a mixing method'),
    (['--netType', 'envnet', '--learning', 'intermix', '--eligible', '4'], '--eligible 4'),
    (['--netType', 'envnet', '--split', '0'], '--split 0'),
    (['--netType', 'envnet', '--learning', 'standard', '--BC'], '--BC contradicts'),
    (['--netType', 'envnet', '--schedule', '1.5'], '--schedule'),
    (['--netType', 'envnet', '--combination', 'linear'], '--combination needs'),
    (['--netType', 'envnet', '--mixup_type', 'sound'], '--mixup_type needs'),
    (['--netType', 'resnet'], 'invalid choice'),
])
def test_bad_flags_exit_2_naming_the_flag(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        parse(*args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_are_read_only_and_replace_gives_a_changed_copy():
    opt = parse('--netType', 'envnet', '--learning', 'bc')
    assert opt.argv == ['--data', 'D', '--dataset', 'esc10', '--netType', 'envnet', '--learning',
                        'bc']
    with pytest.raises(AttributeError, match='read-only'):
        opt.nWorkers = 3
    with pytest.raises(AttributeError, match='read-only'):
        del opt.LR
    other = opt.replace(nWorkers=3)
    assert other.nWorkers == 3 and opt.nWorkers is None
    assert {k: v for k, v in vars(other).items() if k != 'nWorkers'} == \
        {k: v for k, v in vars(opt).items() if k != 'nWorkers'}
    with pytest.raises(KeyError, match='nWorker'):
        opt.replace(nWorker=3)
