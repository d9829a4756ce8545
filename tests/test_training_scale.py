"""Training at scale: activation checkpointing (with_cp), CPU bf16 autocast, the train-step
measurement and the trial runs of the real configs."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmglobalmamba.models.backbones import GlobalMamba

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(embed_dims=64, depth=4)


def _loss_and_grads(model, x, seed=0):
    torch.manual_seed(seed)  # drop path draws from the global RNG
    model.zero_grad(set_to_none=True)
    loss = sum(o.float().pow(2).mean() for o in model(x))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize('frozen_stages', [-1, 2])
def test_with_cp_same_loss_and_gradients(frozen_stages):
    torch.manual_seed(0)
    kwargs = dict(arch=SMALL, img_size=64, out_indices=(1, 3), pyramid_strides=(8, 16),
                  drop_path_rate=0.5, frozen_stages=frozen_stages)
    plain = GlobalMamba(**kwargs).train()
    ckpt = GlobalMamba(with_cp=True, **kwargs).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 64, 96)
    loss_a, grads_a = _loss_and_grads(plain, x)
    loss_b, grads_b = _loss_and_grads(ckpt, x)
    if frozen_stages < 0:  # drop path really drops: another seed gives another loss
        assert not torch.equal(_loss_and_grads(plain, x, seed=1)[0], loss_a)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-6,
                                   msg=name)
    if frozen_stages > 0:
        assert 'layers.0.mixer.in_proj.weight' not in grads_b


def test_with_cp_checkpoints_only_when_grad_flows(monkeypatch):
    calls = []
    import torch.utils.checkpoint as cp
    real = cp.checkpoint
    monkeypatch.setattr(cp, 'checkpoint', lambda *a, **k: calls.append(1) or real(*a, **k))
    model = GlobalMamba(arch=SMALL, img_size=64, out_indices=(3, ), pyramid_strides=(16, ),
                        with_cp=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
    assert calls == []
    model(x)[0].sum().backward()
    assert len(calls) == 4


def _cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(),
                                                 dim=0).item()


def test_backbone_bf16_autocast_matches_fp32():
    torch.manual_seed(0)
    model = GlobalMamba('tiny', img_size=128, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 128, 128)
    target = [torch.randn_like(o) for o in model(x)]

    def run(autocast):
        model.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            outs = model(x)
            loss = sum(((o.float() - t) ** 2).mean() for o, t in zip(outs, target))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.grad is not None}

    loss32, g32 = run(False)
    loss16, g16 = run(True)
    assert torch.isfinite(torch.tensor(loss16))
    assert abs(loss16 - loss32) / loss32 < 0.03, (loss16, loss32)
    for name in ('patch_embed.proj.weight', 'layers.0.mixer.in_proj.weight',
                 'layers.12.mixer.x_proj.weight', 'layers.23.mixer.out_proj.weight',
                 'pos_embed'):
        assert torch.isfinite(g16[name]).all()
        assert _cosine(g16[name], g32[name]) > 0.95, name


def test_serializer_stays_fp32_under_autocast():
    from mmglobalmamba.models.layers import FrequencySerializer
    ser = FrequencySerializer()
    x = torch.randn(1, 3, 128, 128)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        images = ser.band_images(x)
    assert all(im.dtype == torch.float32 for im in images)
    with torch.no_grad():
        ref = ser.band_images(x)
    for a, b in zip(images, ref):
        torch.testing.assert_close(a, b)


def test_segmentor_train_step_cpu_autocast_wrapper():
    """UperNet + GlobalMamba-tiny train steps through CPUAutocastOptimWrapper (bf16) and the
    fp32 OptimWrapper from the same weights: finite, losses within a few percent."""
    from mmglobalmamba.benchmark.train_step import build_train_setup
    from mmglobalmamba.engine.synthetic_batch import synthetic_batch
    cfg = osp.join(ROOT, 'configs/demo/upernet_globalmamba-tiny_synthetic-seg.py')
    losses = {}
    for precision in ('fp32', 'bf16'):
        torch.manual_seed(0)
        model, wrapper, task, num_classes = build_train_setup(cfg, precision=precision)
        assert type(wrapper).__name__ == ('OptimWrapper' if precision == 'fp32'
                                          else 'CPUAutocastOptimWrapper')
        data = synthetic_batch(task, (128, 128), 2, num_classes)
        losses[precision] = float(model.train_step(data, wrapper)['loss'])
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert abs(losses['bf16'] - losses['fp32']) / losses['fp32'] < 0.05, losses


def test_enable_amp_choices():
    from mmengine.config import ConfigDict

    from mmglobalmamba.engine import enable_amp
    cfg = ConfigDict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='AdamW')))
    enable_amp(cfg, device='cuda')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'float16'
    cfg = ConfigDict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='AdamW')))
    enable_amp(cfg, device='cpu')
    assert cfg.optim_wrapper.type == 'CPUAutocastOptimWrapper'
    with pytest.raises(ValueError, match='fp16 mixed precision needs a CUDA GPU'):
        enable_amp(ConfigDict(optim_wrapper=dict(type='OptimWrapper')), 'float16', 'cpu')


@pytest.mark.slow
def test_gpu_check_config_stage_on_cpu(tmp_path):
    """The config stage of tools/gpu_check.sh in its CPU mode: the three main configs,
    2 iterations at 64 px, with and without with_cp, then an evaluation."""
    proc = subprocess.run(['bash', 'tools/gpu_check.sh', '--cpu-config-stage'], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500,
                          env=dict(__import__('os').environ, PYTHON=sys.executable,
                                   TRIAL_WORK_DIR=str(tmp_path)))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'trial runs: OK' in out
    for name in ('upernet_globalmamba_ade20k', 'mask-rcnn_globalmamba_fpn_1x_coco',
                 'upernet_vim-tiny_ade20k'):
        assert out.count(f'| {name} |') == 2, name
