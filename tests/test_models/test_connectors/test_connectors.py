"""Generic connectors: shapes, values and the channel filling done by the dry run.
(Their docstring examples run in tests/test_docstring_examples.py.)"""
import copy

import pytest
import torch

from mmkd.models.connectors import (ConvBNConnector, IdentityConnector, MapToTokensConnector,
                                    ResizeConnector, TokensToMapConnector, map_to_tokens,
                                    tokens_to_map)
from mmkd.models.connectors.conv_bn_connector import SYNC_NORM_NAMES
from mmkd.utils.errors import ConfigError


def test_conv_bn_connector_maps_channels_and_is_filled_from_shapes():
    cfg = ConvBNConnector.complete_cfg(dict(type='ConvBNConnector'), (2, 8, 4, 4), (2, 16, 4, 4))
    assert (cfg['in_channels'], cfg['out_channels']) == (8, 16)
    assert ConvBNConnector.needs_shapes(dict(type='ConvBNConnector'))
    assert not ConvBNConnector.needs_shapes(cfg)
    connector = ConvBNConnector(**{k: v for k, v in cfg.items() if k != 'type'})
    assert connector(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match='in_channels and out_channels'):
        ConvBNConnector(out_channels=4)


@pytest.mark.parametrize('train_mode', [True, False])
def test_conv_bn_connector_recompute_gives_the_same_values_gradients_and_bn_statistics(
        train_mode):
    torch.manual_seed(0)
    kept = ConvBNConnector(8, 16).train(train_mode)
    recomputed = copy.deepcopy(kept)
    recomputed.recompute = True
    target = torch.randn(4, 16, 12, 12)
    grads = []
    for connector in (kept, recomputed):
        feature = torch.randn(4, 8, 12, 12, generator=torch.Generator().manual_seed(1),
                              requires_grad=True)
        for _ in range(2):  # two steps: the running statistics move twice, once per step
            out = connector(feature)
            ((out - target)**2 * torch.linspace(0, 1, 12)).sum().backward()
        grads.append((out, feature.grad, connector.conv.weight.grad, connector.norm.weight.grad,
                      connector.norm.bias.grad, connector.norm.running_mean,
                      connector.norm.running_var, connector.norm.num_batches_tracked))
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    assert int(recomputed.norm.num_batches_tracked) == (2 if train_mode else 0)


def test_conv_bn_connector_recompute_keeps_only_its_input_for_the_backward_pass():
    def saved_bytes(connector):
        total = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: total.append(t.numel() * t.element_size()) or t, lambda t: t):
            connector(torch.randn(2, 8, 16, 16, requires_grad=True))
        return sum(total)
    connector = ConvBNConnector(8, 32)
    kept = saved_bytes(connector)
    connector.recompute = True
    # the conv output (2, 32, 16, 16) is no longer saved, only the input (2, 8, 16, 16)
    assert saved_bytes(connector) <= kept - 2 * 32 * 16 * 16 * 4 + 1024


def test_conv_bn_connector_recompute_refuses_syncbn():
    with pytest.raises(ConfigError, match='synchronised BatchNorm'):
        ConvBNConnector(8, 16, norm_cfg=dict(type='SyncBN'), recompute=True)
    # mmengine's sync_bn converts the BN layers after the model is built
    connector = torch.nn.SyncBatchNorm.convert_sync_batchnorm(ConvBNConnector(8, 16,
                                                                             recompute=True))
    with pytest.raises(ConfigError, match='sync_bn'):
        connector(torch.randn(2, 8, 4, 4, requires_grad=True))
    # mmcv's synchronised BN (norm_cfg type 'MMSyncBN') is recognised by its class name
    import mmcv.ops
    assert mmcv.ops.SyncBatchNorm.__name__ in SYNC_NORM_NAMES


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
