"""Draw GlobalMamba's frequency serialization of an image: the K band images, each band's
token grid, the scan order across bands and the cls position (N // 2).

    python tools/visualize_serialization.py IMAGE --out serialization.png
    # the README picture (synthetic image, 8-bit palette PNG):
    python tools/visualize_serialization.py --example --size 224 224 \
        --out docs/serialization_example.png --palette
    python tools/visualize_serialization.py IMAGE --size 512 768 --num-bands 3 --out s.png
"""
import argparse
import os


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('image', nargs='?', help='input image (any size >= one patch)')
    parser.add_argument('--example', action='store_true',
                        help='use the built-in synthetic image instead of IMAGE')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--num-bands', type=int, default=4, help='K frequency bands (4)')
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='resize the image to H x W first (default: its own size; '
                        '224 x 224 for --example)')
    parser.add_argument('--dpi', type=int, default=110)
    parser.add_argument('--panel-inches', type=float, default=3.2,
                        help='width of one band panel')
    parser.add_argument('--no-labels', action='store_true', help='do not number tokens')
    parser.add_argument('--palette', action='store_true',
                        help='write an 8-bit palette PNG (smaller, for docs)')
    args = parser.parse_args(argv)
    if (args.image is None) == (not args.example):
        parser.error('give exactly one of IMAGE or --example')

    import matplotlib
    matplotlib.use('Agg')
    from mmglobalmamba.visualization.serialization import (make_example_image,
                                                           plot_serialization)
    if args.example:
        image, size = make_example_image(tuple(args.size or (224, 224))), None
    else:
        image, size = args.image, args.size
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    res = plot_serialization(image, num_bands=args.num_bands, patch_size=args.patch_size,
                             size=size, out=args.out, dpi=args.dpi,
                             panel_inches=args.panel_inches, label_tokens=not args.no_labels,
                             palette=args.palette)
    H, W = res.image_size
    grids = ', '.join(f'{h}x{w}' for h, w in res.grids)
    print(f'{H}x{W} image, {len(res.grids)} bands: grids {grids}; '
          f'{sum(h * w for h, w in res.grids)} tokens, cls at {res.cls_position}')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
