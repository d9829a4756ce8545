"""Build any mmseg / mmdet config's model and run it once on CPU, without data or weights
(see :mod:`mmglobalmamba.checks.config_check`).

Examples::

    python tools/check_config.py configs/upernet_globalmamba_ade20k.py
    python tools/check_config.py configs/mask-rcnn_globalmamba_fpn_1x_coco.py --shape 128 160 --loss
"""
import argparse


def main(argv=None):
    from mmengine.config import Config, DictAction

    from mmglobalmamba.checks.config_check import check_config
    parser = argparse.ArgumentParser(description='Build a config\'s model and run it once')
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=(128, 128), metavar=('H', 'W'))
    parser.add_argument('--loss', action='store_true', help='also run a training forward+backward')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    print(f'{args.config}: {check_config(cfg, tuple(args.shape), loss=args.loss)}')


if __name__ == '__main__':
    main()
