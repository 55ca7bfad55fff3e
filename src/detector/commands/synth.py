"""``detector synth``: write a synthetic COCO detection channel (shapes on noisy backgrounds)."""

from __future__ import annotations

from pathlib import Path

HELP = "write synthetic COCO detection data (a channel, or training+testing channels)"


def add_arguments(parser) -> None:
    parser.add_argument("output", type=Path, help="directory to write (created)")
    parser.add_argument("--images", type=int, default=64, help="images in the channel (default 64)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="also write OUTPUT/testing with this many images; the first channel goes to OUTPUT/training")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--masks", action="store_true",
                        help="also write each shape's mask as 'segmentation' (polygons, and RLE for the circles)")


def run(args) -> int:
    from ..data.synthetic import generate, generate_channels
    from . import paths

    paths.output_folder(args.output, "OUTPUT", "a folder to write the data into (created when missing)")
    if args.test_images is None:
        path = generate(args.output, args.images, args.size, args.seed, masks=args.masks)
        print(path)
    else:
        for name, path in generate_channels(args.output, args.images, args.test_images, args.size, args.seed, masks=args.masks).items():
            print(f"{name}: {path}")
    return 0
