"""Generate the seeded shapes dataset in the ADE20K layout (see ``mmglobalmamba.datasets``).

Usage: ``python tools/make_synthetic_seg.py --out data/synthetic_seg`` (seeded, idempotent).
"""
import argparse

from mmglobalmamba.datasets import SEG_CLASSES, make_seg_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/synthetic_seg')
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=48)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    make_seg_dataset(args.out, args.num_train, args.num_val, args.size, args.seed)
    print(f'wrote {args.num_train} training and {args.num_val} validation images '
          f'({args.size}x{args.size}, classes {SEG_CLASSES}) to {args.out}')


if __name__ == '__main__':
    main()
