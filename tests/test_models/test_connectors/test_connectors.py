"""Generic connectors: shapes, values and the channel filling done by the dry run.
(Their docstring examples run in tests/test_docstring_examples.py.)"""
import pytest
import torch

from mmkd.models.connectors import (ConvBNConnector, IdentityConnector, MapToTokensConnector,
                                    ResizeConnector, TokensToMapConnector, map_to_tokens,
                                    tokens_to_map)


def test_conv_bn_connector_maps_channels_and_is_filled_from_shapes():
    cfg = ConvBNConnector.complete_cfg(dict(type='ConvBNConnector'), (2, 8, 4, 4), (2, 16, 4, 4))
    assert (cfg['in_channels'], cfg['out_channels']) == (8, 16)
    assert ConvBNConnector.needs_shapes(dict(type='ConvBNConnector'))
    assert not ConvBNConnector.needs_shapes(cfg)
    connector = ConvBNConnector(**{k: v for k, v in cfg.items() if k != 'type'})
    assert connector(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match='in_channels and out_channels'):
        ConvBNConnector(out_channels=4)


def test_resize_connector_pools_down_and_interpolates_up():
    x = torch.arange(16.).view(1, 1, 4, 4)
    pooled = ResizeConnector(size=(2, 2))(x)
    torch.testing.assert_close(pooled, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert ResizeConnector(size=(8, 8), mode='bilinear')(x).shape == (1, 1, 8, 8)
    cfg = ResizeConnector.complete_cfg(dict(type='ResizeConnector'), (1, 1, 4, 4), (1, 5, 3, 3))
    assert cfg['size'] == (3, 3)


def test_tokens_map_round_trip_drops_extra_tokens():
    tokens = torch.randn(2, 2 + 3 * 4, 8)
    feature = tokens_to_map(tokens, num_extra_tokens=2, hw_shape=(3, 4))
    assert feature.shape == (2, 8, 3, 4)
    torch.testing.assert_close(map_to_tokens(feature), tokens[:, 2:])
    square = TokensToMapConnector(num_extra_tokens=1)(torch.randn(2, 1 + 16, 8))
    assert square.shape == (2, 8, 4, 4)
    assert MapToTokensConnector()(square).shape == (2, 16, 8)
    with pytest.raises(ValueError, match='hw_shape'):
        tokens_to_map(torch.randn(2, 1 + 6, 8), num_extra_tokens=1)


def test_identity_connector():
    x = torch.randn(2, 3)
    assert IdentityConnector()(x) is x
