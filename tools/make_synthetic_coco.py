"""Generate the seeded shapes dataset in the COCO layout (see ``mmglobalmamba.datasets``).

Usage: ``python tools/make_synthetic_coco.py --out data/synthetic_coco`` (seeded).
"""
import argparse

from mmglobalmamba.datasets import SHAPES, make_coco_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/synthetic_coco')
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=48)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args()
    n_train, n_val = make_coco_dataset(args.out, args.num_train, args.num_val, args.size,
                                       args.seed)
    print(f'wrote {args.num_train} train images ({n_train} objects) and {args.num_val} val '
          f'images ({n_val} objects), {args.size}x{args.size}, classes {SHAPES}, to {args.out}')


if __name__ == '__main__':
    main()
