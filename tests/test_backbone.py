"""GlobalMamba backbone: exactness against the released algorithm, shapes, loading, errors."""

import pytest
import torch

from mmglobalmamba.models.backbones.checkpoint import (CheckpointMismatchError,
                                                      adapt_state_dict,
                                                      convert_classifier_checkpoint)
from mmglobalmamba.models.backbones import GlobalMamba
from reference_globalmamba import randomize_, released_checkpoint, released_forward

# Where the 24 blocks of 'tiny' are not the point: the same code at a fraction of the cost.
SMALL = dict(embed_dims=32, depth=2)
PYRAMID = dict(arch=dict(embed_dims=32, depth=4), out_indices=(0, 1, 2, 3))  # 4 levels


def _released_file(tmp_path, arch=SMALL, seed=0, name='released.pth'):
    """A checkpoint in the released classifier's exact format, random weights."""
    torch.manual_seed(seed)
    depth = GlobalMamba.arch_zoo[arch]['depth'] if isinstance(arch, str) else arch['depth']
    model = GlobalMamba(arch=arch, out_indices=(depth - 1,), pyramid_strides=(16,))
    sd = randomize_(model.state_dict(), seed)
    path = tmp_path / name
    torch.save(released_checkpoint(sd), path)
    return str(path), sd


@pytest.mark.slow
def test_final_features_equal_the_released_model(tmp_path):
    """At the released depth (24 blocks): the errors of all blocks add up here."""
    path, sd = _released_file(tmp_path, arch='tiny')
    model = GlobalMamba('tiny', out_indices=(23,), pyramid_strides=(16,), final_norm=True,
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = released_forward(x, sd)  # (2, 256, 192)
        tokens = model.forward_tokens(x)
        (feat,) = model(x)
    err = (tokens - ref).abs().max().item()
    print(f'max |ours - released| over final features: {err:.2e}')
    torch.testing.assert_close(tokens, ref, atol=1e-4, rtol=1e-4)
    # the output map is the finest band of the same features, in spatial order
    finest = torch.cat([ref[:, :127], ref[:, 128:]], 1)[:, -196:]
    torch.testing.assert_close(feat, finest.transpose(1, 2).reshape(2, 192, 14, 14),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('size', [(512, 512), (800, 1344)])
def test_pyramid_shapes_forward_backward(size):
    torch.manual_seed(0)
    model = GlobalMamba(drop_path_rate=0.1, **PYRAMID)
    model.train()
    x = torch.randn(2, 3, *size)
    outs, band_maps = model.forward_band_maps(x)
    outs = outs + tuple(m for maps in band_maps for m in maps)
    h, w = size[0] // 16, size[1] // 16
    expect = [(h * 4, w * 4), (h * 2, w * 2), (h, w), (h // 2, w // 2)]
    assert [tuple(o.shape) for o in outs[:4]] == [(2, 32, *s) for s in expect]
    grids = model.serializer.band_grids(*size)
    assert [tuple(o.shape[-2:]) for o in outs[4:]] == grids[:-1] * 4
    sum(o.float().mean() for o in outs).backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad.abs().sum() > 0
    assert model.layers[0].mixer.A_log.grad.abs().sum() > 0


def test_arch_presets_parameter_counts():
    counts = {a: sum(p.numel() for p in GlobalMamba(a, out_indices=(23,), pyramid_strides=(16,),
                                                   final_norm=True).parameters())
              for a in ('tiny', 'small')}
    # hand count, tiny: patch 3*16*16*192+192, pos 256*192, cls 192, norm_f 192, and per
    # layer in_proj 192*768, conv 384*4+384, x_proj 384*44, dt_proj 12*384+384,
    # A_log 384*16, D 384, out_proj 384*192, norm 192
    per_layer = 192 * 768 + 384 * 5 + 384 * 44 + 12 * 384 + 384 + 384 * 16 + 384 + 384 * 192 + 192
    assert counts['tiny'] == 3 * 256 * 192 + 192 + 256 * 192 + 192 + 192 + 24 * per_layer
    assert 5.5e6 < counts['tiny'] < 7e6 and 20e6 < counts['small'] < 27e6


def test_out_indices_negative_order_and_final_norm():
    model = GlobalMamba(dict(embed_dims=32, depth=5), out_indices=(-1, 3),
                        pyramid_strides=(32, 16)).eval()
    assert model.out_indices == (4, 3)
    outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 2, 3), (1, 32, 4, 6)]
    assert isinstance(model.out_norms[0], torch.nn.Identity)  # norm_f is used there


def test_positions_cached_by_size_only_without_grad():
    model = GlobalMamba(SMALL, out_indices=(1,), pyramid_strides=(16,)).eval()
    grids = model.serializer.band_grids(512, 512)
    with torch.no_grad():
        a = model.band_pos_embed(grids)
        assert model.band_pos_embed(grids) is a
        model.pos_embed.add_(1.0)  # a new version invalidates the cache
        b = model.band_pos_embed(grids)
    assert b is not a and torch.allclose(b, a + 1.0, atol=1e-5)
    c = model.band_pos_embed(grids)  # grad enabled: recomputed, differentiable
    assert c.requires_grad


def test_vim_mode_raster_bidirectional():
    from reference_globalmamba import mixer as ref_mixer
    torch.manual_seed(0)
    model = GlobalMamba(SMALL, serialization='raster', bimamba=True, if_devide_out=True,
                        out_indices=(1,), pyramid_strides=(16,)).eval()
    names = dict(model.named_parameters())
    for n in ('conv1d_b.weight', 'x_proj_b.weight', 'dt_proj_b.bias', 'A_b_log', 'D_b'):
        assert f'layers.0.mixer.{n}' in names
    assert model.pos_embed.shape == (1, 197, 32)
    mixer = model.layers[0].mixer
    h = torch.randn(2, 9, 32)
    sd = {k: v for k, v in mixer.state_dict().items()}
    back = {k.replace('_b', ''): v for k, v in sd.items() if '_b' in k}
    back.update({k: v for k, v in sd.items() if k.startswith(('in_proj', 'out_proj'))})
    with torch.no_grad():
        expect = (ref_mixer(h, sd, '') + ref_mixer(h.flip(1), back, '').flip(1)) / 2
        torch.testing.assert_close(mixer(h), expect, atol=1e-4, rtol=1e-4)
        assert model(torch.randn(1, 3, 64, 48))[0].shape == (1, 32, 4, 3)


def test_classifier_checkpoint_into_other_pretraining_size(tmp_path):
    path, sd = _released_file(tmp_path)
    model = GlobalMamba(SMALL, img_size=512, out_indices=(1,), pyramid_strides=(16,),
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert model.pos_embed.shape == (1, 1361, 32)
    torch.testing.assert_close(model.layers[1].mixer.x_proj.weight,
                               sd['layers.1.mixer.x_proj.weight'])
    # cls entry kept at the middle
    torch.testing.assert_close(model.pos_embed[0, 680], sd['pos_embed'][0, 127])


def test_conversion_report(tmp_path):
    path, _ = _released_file(tmp_path, arch=PYRAMID['arch'])
    report = convert_classifier_checkpoint(path, str(tmp_path / 'bb.pth'),
                                           GlobalMamba(img_size=512, **PYRAMID))
    assert report['dropped'] == ['head.weight', 'head.bias']
    assert report['resized'] == ['pos_embed (1, 256, 32) -> (1, 1361, 32)']
    assert not report['unexpected']
    assert all(k.startswith(('out_norms', 'pyramid')) for k in report['missing'])
    model = GlobalMamba(img_size=512, **PYRAMID,
                        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bb.pth')))
    model.init_weights()


def test_width_mismatch_names_key_and_shapes(tmp_path):
    path, _ = _released_file(tmp_path, arch=dict(embed_dims=64, depth=2))
    model = GlobalMamba(SMALL, out_indices=(1,), pyramid_strides=(16,),
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointMismatchError,
                       match=r"shape mismatch for 'cls_token': checkpoint \(1, 1, 64\) vs "
                             r"model \(1, 1, 32\).*embed_dims=32.*tiny=192, small=384"):
        model.init_weights()


def test_missing_file_and_corrupt_file(tmp_path):
    def model(checkpoint):
        return GlobalMamba(SMALL, out_indices=(1,), pyramid_strides=(16,),
                           init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))

    with pytest.raises(FileNotFoundError, match="weights '/no/such.pth' do not exist"):
        model('/no/such.pth').init_weights()
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match='truncated or not a torch checkpoint'):
        model(bad).init_weights()
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': model(bad).state_dict()}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:4096])  # a download that stopped early
    with pytest.raises(RuntimeError, match='truncated or not a torch checkpoint'):
        model(cut).init_weights()


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_full_model_checkpoint_with_prefix_and_init_keeps_weights(tmp_path, scope):
    """A segmentor/detector built in its scope: Runner-style init_weights() loads the
    classifier and does not wipe it; its saved checkpoint reloads with prefix='backbone.'."""
    from mmengine.registry import init_default_scope
    path, sd = _released_file(tmp_path, arch=PYRAMID['arch'])
    init_default_scope(scope)
    backbone = dict(type='GlobalMamba', **PYRAMID, norm_cfg=dict(type='BN'),
                    init_cfg=dict(type='Pretrained', checkpoint=path))
    if scope == 'mmseg':
        from mmseg.registry import MODELS
        cfg = dict(type='EncoderDecoder', backbone=backbone,
                   decode_head=dict(type='FCNHead', in_channels=32, channels=16, num_convs=1,
                                    num_classes=3, in_index=3))
    else:
        from mmdet.registry import MODELS
        cfg = dict(type='RetinaNet', backbone=backbone,
                   neck=dict(type='FPN', in_channels=[32] * 4, out_channels=32,
                             num_outs=5),
                   bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=32,
                                  feat_channels=32,
                                  anchor_generator=dict(type='AnchorGenerator',
                                                        octave_base_scale=4,
                                                        scales_per_octave=1,
                                                        ratios=[1.0],
                                                        strides=[8, 16, 32, 64, 128]),
                                  bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                                  loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                                  loss_bbox=dict(type='L1Loss')))
    model = MODELS.build(cfg)
    assert isinstance(model.backbone, GlobalMamba)
    model.init_weights()
    torch.testing.assert_close(model.backbone.layers[3].mixer.in_proj.weight,
                               sd['layers.3.mixer.in_proj.weight'])
    full = tmp_path / 'full.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, full)
    fresh = GlobalMamba(**PYRAMID, init_cfg=dict(type='Pretrained', checkpoint=str(full),
                                                 prefix='backbone.'))
    fresh.init_weights()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_bad_inputs_are_clear_errors():
    model = GlobalMamba(SMALL, out_indices=(1,), pyramid_strides=(16,))
    with pytest.raises(ValueError, match='3-channel.*got 1 channels'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='smaller than one 16x16 patch'):
        model(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match='out index 2 is out of range for 2 blocks'):
        GlobalMamba(SMALL, out_indices=(0, 2))
    with pytest.raises(ValueError, match=r"unknown arch 'huge'.*'small', 'tiny'"):
        GlobalMamba('huge')
    with pytest.raises(ValueError, match='one stride per out index'):
        GlobalMamba(SMALL, out_indices=(1,))
    with pytest.raises(CheckpointMismatchError, match="prefix 'backbone.'"):
        adapt_state_dict({'layers.0.norm.weight': torch.ones(32)}, model, 'backbone.')


def test_frozen_stages_and_norm_eval():
    model = GlobalMamba(**PYRAMID, frozen_stages=3, norm_eval=True)
    model.train()
    assert not model.patch_embed.proj.weight.requires_grad
    assert not model.pos_embed.requires_grad and not model.cls_token.requires_grad
    assert not any(p.requires_grad for p in model.layers[2].parameters())
    assert all(p.requires_grad for p in model.layers[3].parameters())
    assert not model.layers[2].training and model.layers[3].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)


def test_drop_path_schedule_matches_released():
    model = GlobalMamba(dict(embed_dims=32, depth=6), out_indices=(5,), pyramid_strides=(16,),
                        drop_path_rate=0.3)
    rates = [getattr(layer.drop_path, 'drop_prob', 0.0) for layer in model.layers]
    # released: block i's deferred add uses ([0] + linspace)[i + 1] == linspace[i]
    expect = torch.linspace(0, 0.3, 6).tolist()
    assert rates == pytest.approx(expect)


def test_divide_out_under_both_spellings():
    """Vim's flag: ``if_divide_out`` (current) and ``if_devide_out`` (released configs) mean
    the same; without either the sum of both directions is halved; a clash is an error."""
    torch.manual_seed(0)
    kw = dict(arch=dict(embed_dims=32, depth=2), serialization='raster', bimamba=True,
              out_indices=(1,), pyramid_strides=(16,))
    halved = GlobalMamba(if_divide_out=True, **kw).eval()
    x = torch.randn(1, 3, 32, 48)
    for other in (GlobalMamba(if_devide_out=True, **kw), GlobalMamba(**kw)):
        other.load_state_dict(halved.state_dict())
        assert other.if_divide_out is True
        torch.testing.assert_close(other.eval()(x)[0], halved(x)[0])
    summed = GlobalMamba(if_divide_out=False, **kw).eval()
    summed.load_state_dict(halved.state_dict())
    mixer, h = halved.layers[0].mixer, torch.randn(1, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(summed.layers[0].mixer(h), 2 * mixer(h))
    with pytest.raises(ValueError, match='if_divide_out=True and its older spelling '
                                         'if_devide_out=False disagree'):
        GlobalMamba(if_divide_out=True, if_devide_out=False, **kw)
