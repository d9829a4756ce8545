"""Write the deterministic synthetic example image used for the README figure.

    python tools/make_example_image.py docs/example_image.png --size 224 224
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', help='output image path (PNG)')
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    args = parser.parse_args(argv)

    from PIL import Image

    from mmglobalmamba.visualization.serialization import make_example_image
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(make_example_image(tuple(args.size))).save(args.out)
    print(f'wrote {args.out} ({args.size[0]}x{args.size[1]})')


if __name__ == '__main__':
    main()
