"""DearKD's MHCA vision transformer: shapes, Cordonnier et al.'s convolution construction,
mmpretrain compatibility, initialisation and checkpoints."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import DistilledVisionTransformer

from mmkd.models import build_model_from_cfg
from mmkd.models.backbones.mhca_vit import (MHCAVisionTransformer, MultiHeadConvAttention,
                                            local_kernel_offsets, relative_quadratic_encoding)

TINY = dict(embed_dims=32, num_layers=3, num_heads=4, feedforward_channels=64)


def tiny_vit(**kwargs) -> MHCAVisionTransformer:
    cfg = dict(arch=TINY, num_mhca_layers=2, img_size=32, patch_size=4)
    cfg.update(kwargs)
    return MHCAVisionTransformer(**cfg)


def test_mhca_block_and_backbone_shapes():
    torch.manual_seed(0)
    attention = MultiHeadConvAttention(32, 4)
    tokens = torch.randn(2, 2 + 6 * 5, 32)
    assert attention(tokens, (6, 5), num_extra_tokens=2).shape == (2, 32, 32)
    with pytest.raises(ValueError, match='extra tokens'):
        attention(tokens, (5, 5), num_extra_tokens=2)

    images = torch.randn(2, 3, 32, 32)
    vit = tiny_vit(out_indices=(1, 2))
    assert [type(layer.attn).__name__ for layer in vit.layers] == [
        'MultiHeadConvAttention', 'MultiHeadConvAttention', 'MultiheadAttention']
    outs = vit(images)
    assert len(outs) == 2 and all(len(out) == 2 for out in outs)  # (class, distillation)
    assert outs[-1][0].shape == outs[-1][1].shape == (2, 32)
    assert tiny_vit(out_type='featmap')(images)[0].shape == (2, 32, 8, 8)
    assert tiny_vit(out_type='raw')(images)[0].shape == (2, 2 + 64, 32)
    no_dist = tiny_vit(with_dist_token=False)
    assert no_dist.num_extra_tokens == 1 and no_dist(images)[0].shape == (2, 32)
    # Another input size than img_size: the absolute position embedding is resized.
    assert tiny_vit(out_type='featmap')(torch.randn(1, 3, 48, 40))[0].shape == (1, 32, 12, 10)


def test_arch_presets_follow_the_paper():
    for arch, (dims, heads) in dict(tiny=(192, 12), small=(384, 12), base=(768, 16)).items():
        settings = MHCAVisionTransformer.arch_zoo[arch]
        assert (settings['embed_dims'], settings['num_heads']) == (dims, heads)
        assert (settings['num_layers'], settings['num_mhca_layers']) == (12, 8)
    vit = MHCAVisionTransformer('tiny', img_size=224, patch_size=16)
    assert vit.num_mhca_layers == 8 and len(vit.layers) == 12
    cls_token, dist_token = vit(torch.randn(1, 3, 224, 224))[0]
    assert cls_token.shape == dist_token.shape == (1, 192)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='num_mhca_layers=5'):
        tiny_vit(num_mhca_layers=5)
    with pytest.raises(ValueError, match='with_cls_token'):
        tiny_vit(with_cls_token=False, out_type='featmap')
    with pytest.raises(ValueError, match='num_mhca_layers'):
        MHCAVisionTransformer(arch=TINY, img_size=32, patch_size=4)


def test_position_logits_are_the_quadratic_encoding():
    attention = MultiHeadConvAttention(8, 2)
    offsets = torch.tensor([[1., -1.], [0., 2.]])
    attention.set_kernel_offsets(offsets, strength=3.0)
    logits = attention.position_logits((3, 4), num_extra_tokens=1)
    assert logits.shape == (2, 13, 13)
    # Query at grid (1, 1) = token 1 + 5, key at (2, 3) = token 1 + 11: d = (1, 2).
    for head, offset in enumerate(offsets):
        delta = torch.tensor([1., 2.])
        expected = -3.0 * ((delta - offset).pow(2).sum() - offset.pow(2).sum())
        assert torch.allclose(logits[head, 6, 12], expected)
    # Columns of the class token hold the learnable extra-token bias (0 at init).
    assert torch.equal(logits[:, :, 0], torch.zeros(2, 13))
    encoding = relative_quadratic_encoding((3, 4))
    assert encoding[5, 11].tolist() == [5., 1., 2.]


def _content_free_identity_attention(embed_dims: int, num_heads: int) -> MultiHeadConvAttention:
    """MHCA whose content part is off (query and key projections zero) and whose value and
    output projections are the identity, so each head just averages the tokens it attends."""
    attention = MultiHeadConvAttention(embed_dims, num_heads)
    with torch.no_grad():
        attention.qkv.weight.zero_()
        attention.qkv.bias.zero_()
        attention.qkv.weight[2 * embed_dims:] = torch.eye(embed_dims)
        attention.proj.weight.copy_(torch.eye(embed_dims))
        attention.proj.bias.zero_()
    return attention.eval()


def test_cordonnier_construction_is_a_shifted_kernel_convolution():
    """With the content part off and v_h = -alpha (1, -2 D_h), head h attends to the patch at
    offset D_h: the layer computes the depthwise convolution whose kernel for head h's
    channels is the one-hot tap at D_h (Cordonnier et al., ICLR 2020, Lemma 1)."""
    torch.manual_seed(0)
    embed_dims, num_heads, (h, w) = 18, 9, (6, 7)
    attention = _content_free_identity_attention(embed_dims, num_heads)
    offsets = local_kernel_offsets(num_heads)  # the 9 taps of a 3 x 3 kernel
    assert sorted(map(tuple, offsets.int().tolist())) == [
        (r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)]
    attention.set_kernel_offsets(offsets, strength=60.0)
    with torch.no_grad():
        attention.extra_token_bias.fill_(-1e4)  # patches do not attend to the class token

    feature = torch.randn(2, embed_dims, h, w)
    tokens = torch.cat([torch.randn(2, 1, embed_dims), feature.flatten(2).transpose(1, 2)], 1)
    with torch.no_grad():
        out = attention(tokens, (h, w), num_extra_tokens=1)[:, 1:]
    out = out.transpose(1, 2).reshape(2, embed_dims, h, w)

    kernel = torch.zeros(embed_dims, 1, 3, 3)
    head_dims = embed_dims // num_heads
    for head, (dr, dc) in enumerate(offsets.int().tolist()):
        kernel[head * head_dims:(head + 1) * head_dims, 0, 1 + dr, 1 + dc] = 1
    conv = F.conv2d(feature, kernel, padding=1, groups=embed_dims)
    # Inside the grid (away from the zero padding the attention does not have) they agree.
    assert torch.allclose(out[:, :, 1:-1, 1:-1], conv[:, :, 1:-1, 1:-1], atol=1e-5)
    # And the attention of every interior query is one-hot on its tap.
    bias = attention.position_logits((h, w), 1)
    weights = bias.softmax(-1)[:, 1:, 1:].reshape(num_heads, h, w, h * w)
    assert (weights[:, 1:-1, 1:-1].amax(-1) > 0.999).all()


def test_k0_equals_mmpretrain_deit():
    """With no MHCA block it is mmpretrain's DistilledVisionTransformer: same keys, same
    outputs for the same weights (so DeiT checkpoints load)."""
    torch.manual_seed(0)
    deit = DistilledVisionTransformer(arch=TINY, img_size=32, patch_size=4)
    deit.init_weights()
    ours = tiny_vit(num_mhca_layers=0)
    ours.load_state_dict(deit.state_dict(), strict=True)
    deit.eval(), ours.eval()  # mmpretrain backbones' train() returns None
    images = torch.randn(2, 3, 32, 32)
    for a, b in zip(deit(images)[0], ours(images)[0]):
        assert torch.allclose(a, b, atol=1e-6)


def test_init_weights_and_checkpoint_loading(tmp_path):
    torch.manual_seed(0)
    vit = tiny_vit(init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02)])
    vit.init_weights()
    assert vit.dist_token.abs().sum() > 0 and vit.pos_embed.abs().sum() > 0
    expected = -1.0 * torch.cat([torch.ones(4, 1), -2 * local_kernel_offsets(4)], 1)
    assert torch.allclose(vit.layers[0].attn.position_weights, expected)
    path = str(tmp_path / 'backbone.pth')
    torch.save({'state_dict': vit.state_dict()}, path)

    # The mmpretrain way: a Pretrained init_cfg in an ImageClassifier config.
    model = build_model_from_cfg(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='mmkd.MHCAVisionTransformer', arch=TINY, num_mhca_layers=2,
                      img_size=32, patch_size=4,
                      init_cfg=dict(type='Pretrained', checkpoint=path)),
        head=dict(type='mmkd.DearKDClsHead', num_classes=10, in_channels=32)))
    model.init_weights()
    for key, value in vit.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    vit.eval(), model.eval()
    images = torch.randn(2, 3, 32, 32)
    for a, b in zip(vit(images)[0], model.backbone(images)[0]):
        assert torch.allclose(a, b)

    # A checkpoint of another resolution: pos_embed is resized, the MHCA parameters load as
    # they are (they do not depend on the grid).
    bigger = tiny_vit(img_size=48)
    bigger.load_state_dict(torch.load(path)['state_dict'])
    assert bigger.pos_embed.shape == (1, 2 + 144, 32)
    assert torch.equal(bigger.layers[1].attn.position_weights, vit.layers[1].attn.position_weights)


def test_frozen_stages_and_layer_depth():
    vit = tiny_vit(frozen_stages=1)
    assert not vit.dist_token.requires_grad and not vit.cls_token.requires_grad
    assert not any(p.requires_grad for p in vit.layers[0].parameters())
    assert all(p.requires_grad for p in vit.layers[1].parameters())
    assert vit.get_layer_depth('backbone.dist_token', 'backbone.') == (0, 5)
    assert vit.get_layer_depth('backbone.layers.1.attn.position_weights', 'backbone.') == (2, 5)
