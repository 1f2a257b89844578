"""Extract Debian's Noto Color Emoji pictures into a folder of small RGB PNGs, one sub-folder per class.

genlab has no network here, so CIFAR-style colour data must come from something a Debian package
ships: ``apt-get install fonts-noto-color-emoji`` installs a colour bitmap font (CBDT: one PNG per
glyph, drawn at 109 px), and this script turns its pictures into the colour dataset that stands in
for CIFAR in genlab's checks. It takes every bitmap glyph that is an emoji picture, straight from
the font's CBDT table: the single code points and the sequences the font draws as one picture
(skin-tone variants, ZWJ sequences such as families, jobs and gendered people, flags, keycaps):
3,881 images in 9 classes from fonts-noto-color-emoji 2.042. Each is put on white, cropped to its
ink (the alpha channel's bounding box), centred in a square, resized with Lanczos to ``--size``
pixels and saved as RGB ``OUT/<class>/u<code points>.png``: lower-case hex (at least 4 digits)
joined by '-', without the variation selector U+FE0F, like Noto's own file names
(``u1f44d-1f3fb.png`` is thumbs up with light skin tone), so a file's name never changes.

Which sequence a glyph draws is read from the font: its cmap (single code points) and its GSUB
ligature lookups (sequences of glyphs, each mapped back to its code point through the cmap).
Private-use code points and malformed sequences are ignored, and so are the mirror images Noto
adds for right-to-left text (where two readings remain, the one that keeps the font's glyph
order sorted by sequence, as Noto builds it, wins).

The class of a picture:

- ``flags``: a pair of regional indicators (country flags), a tag sequence (England, Scotland,
  Wales and the other subdivision flags the font has) or a ZWJ sequence starting with a white
  or black flag (rainbow, transgender, pirate);
- otherwise the Unicode block of its first meaningful code point (ignoring ZWJ U+200D, the
  variation selectors U+FE0E/U+FE0F and the skin-tone modifiers U+1F3FB..U+1F3FF), when it is
  one of the seven big emoji blocks (misc-symbols, dingbats, pictographs, emoticons, transport,
  supplemental, pictographs-ext-a);
- ``other``: everything else (keycaps and the emoji of a dozen small blocks: arrows, technical
  symbols, geometric shapes, enclosed letters and ideographs, ...).

A class with fewer than ``MIN_CLASS`` (30) pictures is merged into ``other``, and ``other`` is
left out if it still has fewer. Left out as not pictures: lone skin-tone modifiers (colour
swatches), lone regional-indicator letters, lone ASCII characters (the plain '#', '*' and digits
keycaps are built from), the lone keycap frame U+20E3, the unknown-flag placeholder (black flag
+ cancel tag) and any blank glyph. Train on it with
``genlab train gan --preset cgan --dataset folder:data/emoji``.

    python benchmarks/make_emoji_dataset.py --out data/emoji --size 32

The folder is built under a hidden temporary name next to OUT and renamed into place when
complete. An OUT that exists and is not empty is refused (exit 2) unless ``--overwrite`` is
given, which swaps the new folder in and then deletes the old one.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
ZWJ = 0x200D
VARIATION_SELECTORS = frozenset({0xFE0E, 0xFE0F})
KEYCAP = 0x20E3
SKIN_TONES = range(0x1F3FB, 0x1F400)  # modifiers, not pictures: drawn alone they are colour swatches
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)  # two of them make a country flag
TAGS = range(0xE0020, 0xE0080)  # after a black flag they spell a subdivision flag (gbeng = England)
CANCEL_TAG = 0xE007F
FLAG_BASES = frozenset({0x1F3F3, 0x1F3F4})  # white and black flag: first of the ZWJ flags (rainbow, pirate, ...)
IGNORED = VARIATION_SELECTORS | {ZWJ} | set(SKIN_TONES)  # never choose the class
# Unicode blocks holding most emoji (Unicode 15, Blocks.txt): the class of each picture.
BLOCKS = {
    "misc-symbols": (0x2600, 0x26FF),
    "dingbats": (0x2700, 0x27BF),
    "pictographs": (0x1F300, 0x1F5FF),
    "emoticons": (0x1F600, 0x1F64F),
    "transport": (0x1F680, 0x1F6FF),
    "supplemental": (0x1F900, 0x1F9FF),
    "pictographs-ext-a": (0x1FA70, 0x1FAFF),
}
FLAGS, OTHER = "flags", "other"
MIN_CLASS = 30  # a smaller class is merged into OTHER; OTHER itself is dropped when smaller

Sequence = tuple[int, ...]


def _private_use(cp: int) -> bool:
    return 0xE000 <= cp <= 0xF8FF or cp >= 0xF0000


def _well_formed(seq: Sequence) -> bool:
    """Whether a sequence can be an emoji: no private-use code points, no joiner, selector,
    modifier, tag or keycap frame where no base precedes it, and no modifier right after a joiner."""
    if any(_private_use(cp) for cp in seq):
        return False
    if len(seq) > 1 and (seq[0] in IGNORED or seq[0] in TAGS or seq[0] == KEYCAP or seq[-1] == ZWJ):
        return False
    return not any(a == ZWJ and b in SKIN_TONES for a, b in itertools.pairwise(seq))


def _mirror(seq: Sequence) -> Sequence:
    """The right-to-left twin Noto's build (add_glyphs.py, ``get_rtl_seq``) maps to the same glyph
    as a ZWJ sequence: the sequence reversed, then each skin-tone modifier bubbled rightwards."""
    if ZWJ not in seq:
        return ()
    out = list(reversed(seq))
    for i in range(1, len(out)):
        if out[i - 1] in SKIN_TONES:
            out[i - 1], out[i] = out[i], out[i - 1]
    return tuple(out)


def _ligatures(gsub) -> Iterable[tuple[list[str], str]]:
    """(component glyph names, ligature glyph name) of every GSUB ligature substitution."""
    for lookup in gsub.table.LookupList.Lookup:
        for sub in lookup.SubTable:
            if lookup.LookupType == 7:  # an extension wraps the real subtable
                sub = sub.ExtSubTable
            if sub.LookupType != 4:
                continue
            for first, ligatures in sub.ligatures.items():
                for lig in ligatures:
                    yield [first, *lig.Component], lig.LigGlyph


def glyph_sequences(font) -> dict[str, Sequence]:
    """Bitmap glyph name -> the code point sequence it draws (see the module docstring)."""
    by_glyph: dict[str, list[int]] = {}
    for cp, name in sorted(font.getBestCmap().items()):
        by_glyph.setdefault(name, []).append(cp)
    found: dict[str, set[Sequence]] = {name: {(cp,) for cp in cps} for name, cps in by_glyph.items()}
    if "GSUB" in font:
        for components, name in _ligatures(font["GSUB"]):
            for seq in itertools.product(*(by_glyph.get(c, ()) for c in components)):
                found.setdefault(name, set()).add(tuple(cp for cp in seq if cp != 0xFE0F))
    options: dict[str, list[Sequence]] = {}
    for name, seqs in found.items():
        good = sorted(s for s in seqs if _well_formed(s))
        # A ZWJ sequence's mirror image maps to the same glyph; the true sequence is the one whose
        # mirror is there too (with skin tones mirroring is not its own inverse, so that decides).
        forward = [s for s in good if _mirror(s) in seqs and _mirror(s) != s]
        if forward:
            good = forward
        if good:
            options[name] = good
    # Where two readings remain (a ZWJ pair without skin tones, a flag with aliases): Noto orders
    # its sequence glyphs by sequence, so take the reading that lies between the neighbours' ones.
    order = {name: i for i, name in enumerate(font.getGlyphOrder())}
    multi = sorted((n for n, o in options.items() if len(o[0]) > 1), key=order.__getitem__)
    chosen = {name: seqs[0] for name, seqs in options.items() if len(seqs) == 1}
    for i, name in enumerate(multi):
        if name in chosen:
            continue
        lo = next((chosen[n] for n in reversed(multi[:i]) if n in chosen), ())
        hi = next((chosen[n] for n in multi[i + 1 :] if n in chosen), (sys.maxsize,))
        fits = [s for s in options[name] if lo < s < hi]
        chosen[name] = fits[0] if len(fits) == 1 else options[name][0]
    for name, seqs in options.items():
        chosen.setdefault(name, seqs[0])
    return chosen


def classify(seq: Sequence) -> str | None:
    """The class of a picture's sequence, or None when it is not a picture (module docstring)."""
    if all(cp in REGIONAL_INDICATORS for cp in seq):
        return FLAGS if len(seq) == 2 else None
    if seq[0] in FLAG_BASES and len(seq) > 1:
        if seq[-1] == CANCEL_TAG and len(seq) == 2:
            return None  # black flag + cancel tag: the font's unknown-flag placeholder
        return FLAGS
    meaningful = [cp for cp in seq if cp not in IGNORED]
    if not meaningful or seq == (KEYCAP,) or (len(seq) == 1 and seq[0] < 0x80):
        return None
    first = meaningful[0]
    return next((name for name, (lo, hi) in BLOCKS.items() if lo <= first <= hi), OTHER)


def file_stem(seq: Sequence) -> str:
    """``u1f44d-1f3fb``: the code points in lower-case hex (at least 4 digits), joined by '-'."""
    return "u" + "-".join(f"{cp:04x}" for cp in seq)


def plan(font) -> dict[str, list[tuple[str, Sequence]]]:
    """Class -> [(glyph name, sequence)] of the pictures to draw, each class in sequence order."""
    strike = font["CBDT"].strikeData[0]
    classes: dict[str, list[tuple[str, Sequence]]] = {}
    for name, seq in glyph_sequences(font).items():
        label = classify(seq) if name in strike else None
        if label is not None:
            classes.setdefault(label, []).append((name, seq))
    for label in [c for c in classes if c != OTHER and len(classes[c]) < MIN_CLASS]:
        classes.setdefault(OTHER, []).extend(classes.pop(label))
    if len(classes.get(OTHER, ())) < MIN_CLASS:
        classes.pop(OTHER, None)
    return {label: sorted(items, key=lambda item: item[1]) for label, items in sorted(classes.items())}


def render(png: bytes, size: int) -> Image.Image | None:
    """A glyph's PNG on white, cropped to its ink, centred in a square, ``size`` x ``size`` RGB; None if blank."""
    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    box = rgba.getchannel("A").getbbox()
    if box is None:
        return None
    ink = rgba.crop(box)
    side = max(ink.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def build(font, folder: Path, size: int, limit_per_class: int | None) -> dict[str, int]:
    """Write the pictures of ``font`` (a fontTools TTFont) into ``folder``, which exists and is
    empty; class -> number written."""
    strike = font["CBDT"].strikeData[0]
    counts: dict[str, int] = {}
    for label, items in plan(font).items():
        written = 0
        for name, seq in items:
            if limit_per_class is not None and written >= limit_per_class:
                break
            image = render(strike[name].imageData, size)
            if image is None:
                continue
            (folder / label).mkdir(exist_ok=True)
            image.save(folder / label / f"{file_stem(seq)}.png")
            written += 1
        if written:
            counts[label] = written
    return counts


def open_font(path: Path):  # -> fontTools.ttLib.TTFont
    """The font, or a one-line reason why it is not a CBDT colour bitmap font (raised as ValueError)."""
    from fontTools.ttLib import TTFont, TTLibError  # comes with matplotlib, which genlab needs

    try:
        font = TTFont(path)
        if "CBDT" not in font or not font["CBDT"].strikeData:
            raise ValueError(f"{path}: no colour bitmaps (CBDT table); expected Noto Color Emoji")
    except (TTLibError, OSError, AssertionError, struct.error) as e:
        raise ValueError(f"{path}: not a font fontTools can read ({e})") from None
    return font


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/emoji"), help="folder to create (default data/emoji)")
    ap.add_argument("--size", type=_positive, default=32, help="image side in pixels (default 32)")
    ap.add_argument("--font", type=Path, default=FONT, help=f"default {FONT}")
    ap.add_argument("--limit-per-class", type=_positive, metavar="N", help="only the first N of each class (tests)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT when it exists and is not empty")
    args = ap.parse_args(argv)
    if not args.font.is_file():
        print(f"{args.font}: no such font; apt-get install fonts-noto-color-emoji", file=sys.stderr)
        return 2
    out: Path = args.out
    if out.exists() and not out.is_dir():
        print(f"{out}: exists and is not a folder", file=sys.stderr)
        return 2
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        print(f"{out}: exists and is not empty; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        font = open_font(args.font)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built under a hidden name next to OUT (same file system, and genlab ignores hidden folders),
    # then renamed into place: OUT is never half written, and never a mix of two runs.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        with font:
            counts = build(font, tmp, args.size, args.limit_per_class)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.replace(old / out.name, out)  # put the old folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    for name, n in counts.items():
        print(f"{name:18} {n:5d}")
    print(f"{sum(counts.values())} images of {args.size}x{args.size} in {len(counts)} classes -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
