"""Render Debian's Noto Color Emoji font into a folder of small RGB PNGs, one sub-folder per Unicode block.

genlab has no network here, so CIFAR-style colour data must come from something a Debian package
ships: ``apt-get install fonts-noto-color-emoji`` installs a colour bitmap font (CBDT, drawn at
109 px) whose single-code-point emoji give about 1,300 real colour images in 7 classes (the
Unicode blocks they live in). Each is drawn on white, cropped to its ink, centred in a square
and resized with Lanczos to ``--size`` pixels. Train on it with
``genlab train gan --preset cgan --dataset folder:data/emoji``.

    python benchmarks/make_emoji_dataset.py --out data/emoji --size 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # the only size a CBDT bitmap font has: FreeType refuses any other
# Unicode blocks holding emoji (Unicode 15, Blocks.txt): the class of each image.
BLOCKS = {
    "misc-symbols": (0x2600, 0x26FF),
    "dingbats": (0x2700, 0x27BF),
    "pictographs": (0x1F300, 0x1F5FF),
    "emoticons": (0x1F600, 0x1F64F),
    "transport": (0x1F680, 0x1F6FF),
    "supplemental": (0x1F900, 0x1F9FF),
    "pictographs-ext-a": (0x1FA70, 0x1FAFF),
}
SKIN_TONES = range(0x1F3FB, 0x1F400)  # modifiers, not pictures: drawn alone they are colour swatches


def emoji_code_points(font_path: Path) -> list[int]:
    """Code points the font maps to a glyph (fontTools comes with matplotlib, which genlab needs)."""
    from fontTools.ttLib import TTFont

    with TTFont(font_path, lazy=True) as font:
        return sorted(font.getBestCmap())


def render(font: ImageFont.FreeTypeFont, char: str, size: int) -> Image.Image | None:
    """The emoji on white, cropped to its ink, centred in a square, ``size`` x ``size`` RGB; None if blank."""
    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((10, 10), char, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    side = max(ink.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/emoji"), help="folder to create (default data/emoji)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    ap.add_argument("--font", type=Path, default=FONT, help=f"default {FONT}")
    args = ap.parse_args(argv)
    if not args.font.is_file():
        print(f"{args.font}: no such font; apt-get install fonts-noto-color-emoji", file=sys.stderr)
        return 2
    font = ImageFont.truetype(str(args.font), FONT_SIZE)
    counts = dict.fromkeys(BLOCKS, 0)
    for cp in emoji_code_points(args.font):
        block = next((name for name, (lo, hi) in BLOCKS.items() if lo <= cp <= hi), None)
        if block is None or cp in SKIN_TONES:
            continue
        image = render(font, chr(cp), args.size)
        if image is None:
            continue
        (args.out / block).mkdir(parents=True, exist_ok=True)
        image.save(args.out / block / f"u{cp:05x}.png")
        counts[block] += 1
    for name, n in counts.items():
        print(f"{name:18} {n:5d}")
    print(f"{sum(counts.values())} images of {args.size}x{args.size} in {len(counts)} classes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
