"""DF-DearKD's synthesis: the objective's composition, a few steps lowering it, the teacher left
untouched, and the synthetic dataset (pixels, cache)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import save_checkpoint_of, tiny_classifier
from mmkd.datafree import (DeepInversionDataset, DeepInversionSynthesizer,
                           teacher_logits_and_embeddings, to_pixels)
from mmkd.models import build_model_from_cfg
from mmkd.models.losses import (BNStatisticsLoss, IntraDivergenceLoss, l2_prior,
                                total_variation)


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


def test_dataset_synthesizes_once_and_reloads_the_cache(tmp_path):
    cfg = tiny_classifier(width=4, num_classes=3)
    ckpt = save_checkpoint_of(cfg, str(tmp_path / 'teacher.pth'))
    cache = str(tmp_path / 'images.pth')
    synthesizer = dict(type='DeepInversionSynthesizer', image_size=16,
                       resolution_schedule=[(16, 2)], jitter=0, flip=False)
    dataset = DeepInversionDataset(teacher=cfg, teacher_ckpt=ckpt, num_per_class=2,
                                   batch_size=4, synthesizer=synthesizer, cache_file=cache)
    assert len(dataset) == 6
    assert sorted(dataset.get_data_info(i)['gt_label'] for i in range(6)) == [0, 0, 1, 1, 2, 2]
    image = dataset.get_data_info(0)['img']
    assert image.shape == (16, 16, 3) and str(image.dtype) == 'uint8'
    # A second build loads the cache: the (now invalid) synthesizer is never built.
    again = DeepInversionDataset(teacher=cfg, teacher_ckpt=ckpt, num_per_class=2,
                                 synthesizer=dict(type='NoSuchSynthesizer'), cache_file=cache)
    assert (again.get_data_info(3)['img'] == dataset.get_data_info(3)['img']).all()
    with pytest.raises(ValueError, match='teacher_ckpt'):
        DeepInversionDataset(teacher=cfg, num_per_class=1, synthesizer=synthesizer)
