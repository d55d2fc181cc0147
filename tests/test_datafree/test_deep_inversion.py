"""DF-DearKD's synthesis: the objective's composition, a few steps lowering it, the teacher left
untouched, and the synthetic dataset (pixels, progress, the cache and its fingerprint)."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F

from helpers import save_checkpoint_of, tiny_classifier
from mmengine.logging import MMLogger

from mmkd.datafree import (BNStatisticsLoss, DeepInversionDataset, DeepInversionSynthesizer,
                           IntraDivergenceLoss, l2_prior, teacher_logits_and_embeddings,
                           teacher_weights_hash, to_pixels, total_variation)
from mmkd.datafree.fingerprint import converts_channels, synthesis_fingerprint
from mmkd.models import build_model_from_cfg


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tiny_classifier(width=4, num_classes=3)
    cfg['data_preprocessor'] = dict(num_classes=3, mean=[100.0] * 3, std=[50.0] * 3)
    teacher = build_model_from_cfg(cfg)
    teacher.init_weights()
    # Non-trivial running statistics, as a trained teacher has.
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return teacher.eval()


def test_objective_is_the_weighted_sum_of_its_terms():
    teacher = _teacher()
    synthesizer = DeepInversionSynthesizer(image_size=16, resolution_schedule=[(16, 1)],
                                           ce_weight=2.0, bn_weight=0.1, tv_weight=0.01,
                                           l2_weight=0.02, ep_weight=3.0, triplet_weight=0.5)
    images = torch.randn(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with BNStatisticsLoss(teacher) as bn_loss:
        terms = synthesizer.objective(teacher, bn_loss, images, labels)
        logits, embeddings = teacher_logits_and_embeddings(teacher, images)
        bn = bn_loss.loss()
    assert torch.allclose(terms['ce'], 2.0 * F.cross_entropy(logits, labels))
    assert torch.allclose(terms['bn'], 0.1 * bn)
    assert torch.allclose(terms['tv'], 0.01 * total_variation(images))
    assert torch.allclose(terms['l2'], 0.02 * l2_prior(images))
    intra = IntraDivergenceLoss(3.0, 0.5, synthesizer.intra_divergence.margin)
    assert torch.allclose(terms['intra_divergence'], intra(embeddings, labels))
    assert embeddings.shape == (6, 32)  # the head's pre_logits: GAP features


def test_synthesis_lowers_the_objective_and_leaves_the_teacher_alone():
    teacher = _teacher()
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    synthesizer = DeepInversionSynthesizer(
        image_size=16, resolution_schedule=[(8, 4), (16, 12)], lr=0.1, warmup_iters=1,
        jitter=0, flip=False, ep_weight=1.0, triplet_weight=1.0)
    labels = torch.tensor([0, 1, 2] * 3)
    images, history = synthesizer.synthesize(teacher, labels, torch.Generator().manual_seed(1),
                                             return_history=True)
    assert images.shape == (9, 3, 16, 16) and len(history) == 16
    assert history[-1] < history[4]  # within the full-resolution stage
    low, high = (0 - 100.0) / 50.0, (255 - 100.0) / 50.0  # clipped to valid pixels
    assert images.min() >= low - 1e-6 and images.max() <= high + 1e-6
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(m._forward_hooks for m in teacher.modules())


def test_synthesizer_checks_its_schedule():
    with pytest.raises(ValueError, match='image_size=32'):
        DeepInversionSynthesizer(image_size=32, resolution_schedule=[(16, 10)])


def test_to_pixels_undoes_the_normalisation():
    teacher = _teacher()
    pixels = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    normalised = (pixels.permute(0, 3, 1, 2).float() - 100.0) / 50.0
    assert torch.equal(to_pixels(normalised, teacher.data_preprocessor), pixels)
    bgr = build_model_from_cfg(dict(tiny_classifier(width=4), data_preprocessor=dict(
        mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0], to_rgb=True))).data_preprocessor
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    normalised = rgb - torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    assert to_pixels(normalised, bgr).flatten().tolist() == [30, 20, 10]  # loaded as BGR


SYNTHESIZER = dict(type='DeepInversionSynthesizer', image_size=16,
                   resolution_schedule=[(16, 2)], jitter=0, flip=False)


def _build(cfg: dict, ckpt: str, cache: str, **changes) -> DeepInversionDataset:
    kwargs = dict(teacher=cfg, teacher_ckpt=ckpt, num_per_class=2, batch_size=4,
                  synthesizer=SYNTHESIZER, cache_file=cache)
    return DeepInversionDataset(**dict(kwargs, **changes))


def _file_state(path: str) -> tuple:
    """Changes when the file is written again (atomic saves replace the inode)."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns


def test_dataset_synthesizes_balanced_uint8_images_with_progress(tmp_path, capsys):
    cfg = tiny_classifier(width=4, num_classes=3)
    ckpt = save_checkpoint_of(cfg, str(tmp_path / 'teacher.pth'))
    MMLogger.get_instance('test_synthesis_progress')  # print_log's current logger
    dataset = _build(cfg, ckpt, str(tmp_path / 'images.pth'))
    assert len(dataset) == 6
    assert sorted(dataset.get_data_info(i)['gt_label'] for i in range(6)) == [0, 0, 1, 1, 2, 2]
    assert [dataset.get_data_info(i)['gt_label'] for i in range(3)] == [0, 1, 2]  # balanced
    image = dataset.get_data_info(0)['img']
    assert image.shape == (16, 16, 3) and str(image.dtype) == 'uint8'
    out = capsys.readouterr().out
    assert '4/6 images' in out and '6/6 images' in out  # one line per batch of 4
    assert '6 images synthesised in' in out and 'images/s' in out
    with pytest.raises(ValueError, match='teacher_ckpt'):
        DeepInversionDataset(teacher=cfg, num_per_class=1, synthesizer=SYNTHESIZER)


def test_cache_is_reused_only_for_the_same_teacher_settings_and_image_count(tmp_path):
    cfg = tiny_classifier(width=4, num_classes=3)
    ckpt = save_checkpoint_of(cfg, str(tmp_path / 'teacher.pth'))
    cache = str(tmp_path / 'images.pth')
    first = _build(cfg, ckpt, cache)
    state = _file_state(cache)
    fingerprint = torch.load(cache, weights_only=True)['fingerprint']
    assert fingerprint['teacher'] == teacher_weights_hash(first._build_teacher())

    # The same teacher, settings and count (written as a tuple instead of a list): reused.
    same = _build(cfg, ckpt, cache,
                  synthesizer=dict(SYNTHESIZER, resolution_schedule=((16, 2), )))
    assert _file_state(cache) == state
    assert all((same.get_data_info(i)['img'] == first.get_data_info(i)['img']).all()
               for i in range(6))

    # another teacher: same architecture, other weights
    other_ckpt = save_checkpoint_of(cfg, str(tmp_path / 'other_teacher.pth'), seed=1)
    changes = [dict(teacher_ckpt=other_ckpt),
               dict(synthesizer=dict(SYNTHESIZER, lr=0.05)),
               dict(synthesizer=dict(SYNTHESIZER, resolution_schedule=[(16, 3)])),
               dict(num_per_class=3)]
    for change in changes:
        dataset = _build(cfg, ckpt, cache, **change)
        assert _file_state(cache) != state, change  # synthesised again and saved
        state = _file_state(cache)
        again = _build(cfg, ckpt, cache, **change)  # and now reused
        assert _file_state(cache) == state, change
        assert len(again) == len(dataset)
    assert len(dataset) == 9

    # A cache of the previous format (no fingerprint) is synthesised again.
    torch.save(dict(images=torch.zeros(9, 16, 16, 3, dtype=torch.uint8),
                    labels=torch.arange(3).repeat(3)), cache)
    state = _file_state(cache)
    dataset = _build(cfg, ckpt, cache, num_per_class=3)
    assert _file_state(cache) != state and dataset.get_data_info(0)['img'].any()


def test_soft_labels_are_the_teachers_softened_predictions_on_the_stored_images(tmp_path):
    cfg = tiny_classifier(width=4, num_classes=3)
    cfg['data_preprocessor'] = dict(num_classes=3, mean=[100.0] * 3, std=[50.0] * 3,
                                    to_rgb=True)
    ckpt = save_checkpoint_of(cfg, str(tmp_path / 'teacher.pth'))
    cache = str(tmp_path / 'images.pth')
    hard = _build(cfg, ckpt, cache)
    assert 'gt_score' not in hard.get_data_info(0)
    state = _file_state(cache)
    soft = _build(cfg, ckpt, cache, soft_label_tau=2.0)
    assert _file_state(cache) == state  # the same images: the cache is reused
    teacher = soft._build_teacher()
    for index in range(len(soft)):
        item = soft.get_data_info(index)
        # the image as the pipeline loads it (BGR), through the teacher's preprocessor
        image = torch.from_numpy(item['img']).permute(2, 0, 1)[None]
        inputs = teacher.data_preprocessor(dict(inputs=image), False)['inputs']
        expected = (teacher(inputs, mode='tensor') / 2.0).softmax(dim=1)[0]
        assert torch.allclose(item['gt_score'], expected, atol=1e-6)
        # its own storage: a view would carry (and pickle) every image's scores
        assert item['gt_score'].untyped_storage().nbytes() == 3 * 4
        assert item['gt_label'] == hard.get_data_info(index)['gt_label']
    # a cache written before the teacher's logits were kept gets them, images unchanged
    data = torch.load(cache, weights_only=True)
    logits = data.pop('teacher_logits')
    torch.save(data, cache)
    again = _build(cfg, ckpt, cache, soft_label_tau=2.0)
    assert torch.equal(torch.load(cache, weights_only=True)['teacher_logits'], logits)
    assert torch.equal(again.get_data_info(0)['gt_score'], soft.get_data_info(0)['gt_score'])
    with pytest.raises(ValueError, match='soft_label_tau'):
        _build(cfg, ckpt, cache, soft_label_tau=0)


def test_teacher_hash_follows_weights_and_normalisation_not_layout():
    teacher = _teacher()
    digest = teacher_weights_hash(teacher)
    assert digest == teacher_weights_hash(teacher.to(memory_format=torch.channels_last))
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        weight = next(changed.parameters())
        weight[(0, ) * weight.dim()] += 1e-3
    assert teacher_weights_hash(changed) != digest
    renormalised = copy.deepcopy(teacher)
    renormalised.data_preprocessor.mean.fill_(90.0)
    assert teacher_weights_hash(renormalised) != digest
    # Swapping BGR/RGB stores the images in the other channel order: another set.
    swapped = copy.deepcopy(teacher)
    swapped.data_preprocessor.to_rgb = not converts_channels(teacher.data_preprocessor)
    assert teacher_weights_hash(swapped) != digest


def test_a_synthesizer_given_by_class_has_a_fingerprint_that_loads_weights_only(tmp_path):
    fingerprint = synthesis_fingerprint('0' * 64, dict(type=DeepInversionSynthesizer, lr=0.1),
                                        num_classes=10, num_per_class=2, batch_size=20, seed=0)
    assert fingerprint['synthesizer']['type'].endswith('DeepInversionSynthesizer')
    torch.save(dict(fingerprint=fingerprint), tmp_path / 'cache.pth')
    assert torch.load(tmp_path / 'cache.pth', weights_only=True)['fingerprint'] == fingerprint


def test_channels_last_gives_the_same_images():
    teacher = _teacher()
    labels = torch.tensor([0, 1, 2] * 2)
    kwargs = dict(image_size=16, resolution_schedule=[(8, 2), (16, 3)], jitter=1, flip=True)
    images = [DeepInversionSynthesizer(channels_last=flag, **kwargs).synthesize(
        teacher, labels, torch.Generator().manual_seed(3)) for flag in (True, False)]
    torch.testing.assert_close(images[0], images[1], rtol=1e-4, atol=1e-4)
