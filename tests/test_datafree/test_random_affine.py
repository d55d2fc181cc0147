"""RandomAffine, the warp DF-DearKD applies to synthetic images while the student trains: what
each range does to a known image, its checks, and the shipped data-free pipeline."""
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from helpers import config_path
from mmkd.datasets import RandomAffine
from mmkd.registry import TRANSFORMS


def _dot(size: int = 33, half: int = 0) -> np.ndarray:
    """A black (size, size, 3) image with a white square of side 2 * half + 1 at its centre."""
    img = np.zeros((size, size, 3), np.uint8)
    centre = size // 2
    img[centre - half:centre + half + 1, centre - half:centre + half + 1] = 255
    return img


def _centre_of_mass(img: np.ndarray) -> np.ndarray:
    weights = img[..., 0].astype(np.float64)
    rows, cols = np.indices(weights.shape)
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def test_no_range_is_the_identity():
    np.random.seed(0)
    img = np.random.randint(0, 256, (32, 32, 3), np.uint8)
    warp = RandomAffine(max_rotate_degree=0, scale_range=(1, 1), max_translate_ratio=0)
    assert np.array_equal(warp(dict(img=img.copy()))['img'], img)


def test_rotation_and_scale_keep_the_centre_shift_moves_it_within_its_range():
    np.random.seed(0)
    turn = RandomAffine(max_rotate_degree=45, scale_range=(0.8, 1.2), max_translate_ratio=0)
    for _ in range(5):
        out = turn(dict(img=_dot(half=2)))['img']
        np.testing.assert_allclose(_centre_of_mass(out), (16, 16), atol=0.05)
    shift = RandomAffine(max_rotate_degree=0, scale_range=(1, 1), max_translate_ratio=0.25)
    moves = [_centre_of_mass(shift(dict(img=_dot(half=1)))['img']) - 16 for _ in range(20)]
    assert max(np.abs(moves).max(axis=1)) <= 0.25 * 33 + 1e-6
    assert min(np.abs(moves).max(axis=1)) > 0  # every draw moved it


def test_scale_zooms_and_the_border_gets_its_value():
    zoom = RandomAffine(max_rotate_degree=0, scale_range=(2, 2), max_translate_ratio=0)
    out = zoom(dict(img=_dot(half=2)))['img']  # a 5 x 5 square becomes about 10 x 10
    assert 9 * 9 <= (out[..., 0] > 127).sum() <= 11 * 11
    shrink = RandomAffine(max_rotate_degree=0, scale_range=(0.5, 0.5), max_translate_ratio=0,
                          border_value=7)
    out = shrink(dict(img=np.full((32, 32, 3), 200, np.uint8)))['img']
    assert (out[0, 0] == 7).all() and (out[16, 16] == 200).all()


@pytest.mark.parametrize('kwargs', [dict(max_rotate_degree=-1), dict(scale_range=(0, 1)),
                                    dict(scale_range=(1.2, 0.8)), dict(max_translate_ratio=-0.1),
                                    dict(prob=1.5)])
def test_bad_ranges_are_config_errors(kwargs):
    with pytest.raises(ValueError, match='RandomAffine: .*'):
        RandomAffine(**kwargs)


def test_the_data_free_pipeline_gives_distinct_views_of_one_image():
    cfg = Config.fromfile(config_path('digits/kd_datafree_resnet18_w32_w4.py'))
    with DefaultScope.overwrite_default_scope('mmkd'):
        steps = [TRANSFORMS.build(step) for step in cfg.train_dataloader.dataset.pipeline]
    assert [type(step).__name__ for step in steps] == [
        'RandomCrop', 'RandomAffine', 'RandomGrayscale', 'PackInputs']
    np.random.seed(0)
    img = np.random.randint(0, 256, (32, 32, 3), np.uint8)
    views = []
    for _ in range(4):
        results = dict(img=img.copy(), gt_label=3)
        for step in steps:
            results = step(results)
        views.append(results['inputs'])
    assert all(view.shape == (3, 32, 32) for view in views)
    assert all(not (views[0] == view).all() for view in views[1:])
    assert results['data_samples'].gt_label.item() == 3
