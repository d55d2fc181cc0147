"""DearKD's aligner connector: shapes, gradients, filling from the dry run, the token<->map
reshape."""
import pytest
import torch
import torch.nn.functional as F

from mmkd.models.connectors import AlignerConnector, map_to_tokens, tokens_to_map


def test_tokens_and_map_round_trip():
    feature = torch.randn(2, 16, 3, 5)
    tokens = map_to_tokens(feature)
    assert tokens.shape == (2, 15, 16)
    with_extra = torch.cat([torch.randn(2, 2, 16), tokens], dim=1)  # class + distillation
    assert torch.equal(tokens_to_map(with_extra, 2, (3, 5)), feature)
    square = torch.randn(2, 1 + 16, 8)
    assert torch.equal(map_to_tokens(tokens_to_map(square, 1)), square[:, 1:])


def test_aligner_shapes_and_computation():
    torch.manual_seed(0)
    aligner = AlignerConnector(in_channels=8, out_channels=12, out_size=(4, 4),
                               num_extra_tokens=2)
    tokens = torch.randn(2, 2 + 8 * 8, 8)
    out = aligner(tokens)
    assert out.shape == (2, 12, 4, 4)
    # By hand: drop the two extra tokens, depthwise conv, LayerNorm over channels, ReLU,
    # 1x1 projection, bilinear resize.
    x = tokens[:, 2:].transpose(1, 2).reshape(2, 8, 8, 8)
    x = F.conv2d(x, aligner.depthwise.weight, aligner.depthwise.bias, padding=1, groups=8)
    x = F.layer_norm(x.permute(0, 2, 3, 1), (8, ), aligner.norm.weight, aligner.norm.bias)
    x = F.conv2d(F.relu(x.permute(0, 3, 1, 2)), aligner.projection.weight,
                 aligner.projection.bias)
    expected = F.interpolate(x, size=(4, 4), mode='bilinear', align_corners=False)
    assert torch.allclose(out, expected, atol=1e-6)
    # Upsampling and a rectangular grid.
    wide = AlignerConnector(8, 3, (6, 10), num_extra_tokens=1, hw_shape=(3, 5))
    assert wide(torch.randn(1, 16, 8)).shape == (1, 3, 6, 10)


def test_aligner_gradients_reach_every_parameter_and_the_tokens():
    aligner = AlignerConnector(in_channels=8, out_channels=4, out_size=(8, 8))
    tokens = torch.randn(2, 2 + 64, 8, requires_grad=True)
    target = torch.rand(2, 4, 8, 8)
    F.mse_loss(aligner(tokens), target).backward()
    for name, param in aligner.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert tokens.grad[:, 2:].abs().sum() > 0
    assert torch.equal(tokens.grad[:, :2], torch.zeros(2, 2, 8))  # extra tokens dropped


def test_aligner_is_completed_from_the_dry_run_shapes():
    cfg = AlignerConnector.complete_cfg(dict(type='AlignerConnector'), (2, 66, 64),
                                        (2, 32, 8, 8))
    assert (cfg['in_channels'], cfg['out_channels'], cfg['out_size']) == (64, 32, (8, 8))
    assert AlignerConnector.needs_shapes(dict(type='AlignerConnector'))
    with pytest.raises(ValueError, match=r'tokens \(B, L, D\)'):
        AlignerConnector.complete_cfg(dict(type='AlignerConnector'), (2, 64, 8, 8),
                                      (2, 32, 8, 8))
    with pytest.raises(ValueError, match='filled from the dry run'):
        AlignerConnector(in_channels=8)
    with pytest.raises(ValueError, match='odd'):
        AlignerConnector(8, 4, (8, 8), kernel_size=2)
