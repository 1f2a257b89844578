"""Datasets from folders of PNG and JPEG images: decoded once into a memory-mapped uint8 cache.

``--dataset folder:PATH`` names a folder of images. When PATH holds sub-folders of images, each
sub-folder is a class (labels in the sorted order of the folder names, which also name the
classes); otherwise PATH's own images are one unlabelled set. Files whose names end in .png,
.jpg or .jpeg (any case) are read; other files and hidden ones are ignored.

Each image becomes (C, H, W) uint8:

- alpha (RGBA, LA, a palette with transparency) is composited on **white**, the page most icons
  and emoji are drawn for;
- C is 1 when every image is grayscale and 3 otherwise (grayscale images are then repeated
  into three channels); 16-bit grayscale keeps its top 8 bits;
- with ``image_size`` N the short side is resized to N with Pillow's Lanczos filter (its
  antialiasing resize) and the centre N x N cropped; without it every image must already
  have the same size.

The held-out split ("test") is every file whose relative path hashes (sha256) into the
lowest :data:`HELDOUT_PERCENT` of 100 buckets, and "train" the rest: a file's split depends on
its path alone, so adding files never moves the others.

The first load decodes everything into ``<cache>/<key>.npy`` (train rows first, then test, so
each split is a slice of one memory map and a dataset larger than RAM still trains) and
``<key>.json`` (labels, file names, classes). The key is a sha256 over every file's relative
path, byte size and content sha256 and the settings, so a changed, added or removed file
builds a new cache. Both files are written to temporary names and renamed, the JSON last, so
a reader never sees half a cache, and two processes building the same cache at once each
rename a complete, identical copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, GenlabError

__all__ = [
    "BACKGROUND",
    "FOLDER_PREFIX",
    "HELDOUT_PERCENT",
    "FolderData",
    "folder_classes",
    "folder_root",
    "is_folder_dataset",
    "is_heldout",
    "load_folder",
]

FOLDER_PREFIX = "folder:"
HELDOUT_PERCENT = 10  # enough test images for pictures and metrics, few enough not to starve training
BACKGROUND = (255, 255, 255)  # alpha is composited on white: see the module docstring
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
MAX_IMAGE_FILE_BYTES = 256 * 2**20  # far above any photo; a multi-GB "image" is refused unread
CACHE_VERSION = 1  # bump when decoding changes: old caches are then never read
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "La"})


def is_folder_dataset(name: str) -> bool:
    return name.startswith(FOLDER_PREFIX)


def folder_root(name: str) -> Path:
    """The folder a ``folder:PATH`` name points at, absolute (relative paths from the current directory)."""
    path = name[len(FOLDER_PREFIX) :]
    if not path:
        raise DataError("folder: needs a path, e.g. --dataset folder:./my-images")
    return Path(os.path.abspath(os.path.expanduser(path)))


def is_heldout(relative_path: str) -> bool:
    """Whether a file (by its path relative to the dataset folder, with '/') belongs to the test split."""
    # surrogateescape: a file name that is not UTF-8 still has bytes to hash
    bucket = int.from_bytes(hashlib.sha256(relative_path.encode("utf-8", "surrogateescape")).digest()[:8], "big") % 100
    return bucket < HELDOUT_PERCENT


@dataclass(frozen=True)
class FolderData:
    """A decoded folder: every image, train rows first (``n_train`` of them), then the held-out ones."""

    images: np.ndarray  # (N, C, H, W) uint8, a read-only-on-disk memory map (copy-on-write)
    labels: np.ndarray  # (N,) int64; all 0 when the folder has no class sub-folders
    files: tuple[str, ...]  # relative paths, in row order
    n_train: int
    class_names: tuple[str, ...]  # () when unlabelled
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason) of the bad files left out
    cache: Path

    @property
    def key(self) -> str:
        """The content key: sha256 over every file's path, label, size and content hash and the settings
        (the cache's name). Two folders with the same key decode to the same images and labels, wherever
        they lie; a changed, added or removed file, or another ``image_size``, gives another key."""
        return self.cache.stem


_WARNED: set[Path] = set()


class _BadImage(Exception):
    """One file that is not a usable image; the message is the reason shown to the user."""


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _scan(root: Path) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(relative path, label) of every image file, sorted, and the class names (() if unlabelled)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (from --dataset folder:PATH)")
    try:
        entries = sorted(root.iterdir())
    except OSError as e:
        raise DataError(f"{root}: cannot list the folder ({e.strerror or e})") from None
    top = [p for p in entries if p.is_file() and _is_image_name(p)]
    classes = []
    for sub in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        found = sorted(p for p in sub.rglob("*") if p.is_file() and _is_image_name(p))
        if found:
            classes.append((sub.name, found))
    if classes and top:
        raise DataError(
            f"{root} holds both images ({top[0].name}, ...) and class sub-folders ({classes[0][0]}, ...)",
            hint=["put every image in a class sub-folder, or the images alone at the top level for unlabelled data"],
        )
    if not classes and not top:
        raise DataError(f"{root}: no .png, .jpg or .jpeg files, at the top level or in sub-folders")
    if not classes:
        return [(p.relative_to(root).as_posix(), 0) for p in top], ()
    if len(classes) == 1:
        raise DataError(
            f"{root} has one class sub-folder ({classes[0][0]}); labels need two or more",
            hint=["move the images to the top level for unlabelled data, or add the other classes' folders"],
        )
    files = [(p.relative_to(root).as_posix(), label) for label, (_, paths) in enumerate(classes) for p in paths]
    return files, tuple(name for name, _ in classes)


def folder_classes(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """The class names of a folder dataset (its sub-folders, sorted), or () when it is unlabelled.

    Only the folder tree is listed: nothing is read or decoded.
    """
    return _scan(Path(os.path.abspath(os.path.expanduser(root))))[1]


def _read(path: Path) -> bytes:
    from .io import read_bytes_capped

    try:
        data = read_bytes_capped(path, MAX_IMAGE_FILE_BYTES, "image")
    except GenlabError as e:
        raise _BadImage(str(e).removeprefix(f"{path}: ")) from None
    if not data:
        raise _BadImage("empty file (0 bytes)")
    return data


def _open(data: bytes):  # -> PIL.Image.Image, header read (lazy: pixels not decoded)
    """Open an image's header; a decompression bomb (Pillow's ``Image.MAX_IMAGE_PIXELS``) is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here both are refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _BadImage(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise _BadImage("not an image (Pillow cannot identify it)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _BadImage(f"corrupt image header ({e})") from None
    if image.format not in ("PNG", "JPEG"):
        raise _BadImage(f"a {image.format} image; genlab reads PNG and JPEG")
    return image


def _decode(data: bytes, channels: int, image_size: int | None) -> np.ndarray:
    """One image file -> (C, H, W) uint8: alpha on white, resized and centre-cropped when asked."""
    from PIL import Image

    image = _open(data)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as e:  # Pillow: "image file is truncated", bad zlib, ...
        raise _BadImage(f"truncated or corrupt ({e})") from None
    if image.mode.startswith("I"):  # 16/32-bit grayscale: keep the top 8 bits rather than clip
        arr = np.asarray(image).astype(np.int64)
        image = Image.fromarray((arr >> (8 if arr.max() > 255 else 0)).clip(0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(page, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image_size is not None:
        w, h = image.size
        scale = image_size / min(w, h)
        size = (max(image_size, round(w * scale)), max(image_size, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def _cache_dir() -> Path:
    """``genlab.data.cache_dir("folders")``, without importing torch (which that module needs) for a path."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "genlab" / "datasets" / "folders"


def _cache_key(
    root: Path, files: Sequence[tuple[str, int]], digests: dict[str, tuple[int, str]], settings: dict
) -> str:
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "settings": settings}, sort_keys=True).encode())
    for rel, label in files:
        size, sha = digests[rel]
        h.update(f"{rel}\0{label}\0{size}\0{sha}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _read_cache(npy: Path, meta_path: Path) -> FolderData | None:
    """The cache when both files are there and agree; None otherwise (then it is rebuilt)."""
    from .io import read_json

    if not meta_path.is_file() or not npy.is_file():
        return None
    try:
        meta = read_json(meta_path, "folder cache index")
        images = np.load(npy, mmap_mode="c")  # copy-on-write: torch wants writable memory, the file stays as is
    except (GenlabError, OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return None
    if images.dtype != np.uint8 or list(images.shape) != meta.get("shape"):
        return None
    return FolderData(
        images=images,
        labels=np.asarray(meta["labels"], dtype=np.int64),
        files=tuple(meta["files"]),
        n_train=int(meta["n_train"]),
        class_names=tuple(meta["class_names"]),
        skipped=tuple((str(a), str(b)) for a, b in meta["skipped"]),
        cache=npy,
    )


def _write_npy_atomically(path: Path, fill: Callable[[np.ndarray], None], shape: tuple[int, ...]) -> None:
    """Create ``path`` as a uint8 .npy of ``shape`` filled by ``fill(memmap)``: temp file, fsync, rename."""
    import tempfile

    from .io import fsync_dir, remove_quietly

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(out)
        out.flush()
        del out
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        remove_quietly(Path(tmp))
        raise


def _bad_files_error(root: Path, bad: Sequence[tuple[str, str]]) -> DataError:
    shown = [f"{rel}: {why}" for rel, why in bad[:20]]
    if len(bad) > 20:
        shown.append(f"... and {len(bad) - 20} more")
    return DataError(
        f"{len(bad)} bad image file(s) in {root}:",
        hint=[*shown, "fix or remove them, or pass --skip-bad-images to train on the others"],
    )


def load_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    warn: Callable[[str], None] | None = None,
) -> FolderData:
    """Decode a folder of images once (see the module docstring) and return it, memory-mapped.

    Bad files (empty, truncated, not an image, not PNG/JPEG, decompression bombs) raise one
    :class:`DataError` naming each with its reason, or with ``skip_bad_images`` are left out and
    named through ``warn`` (default: a ``warning:`` line on stderr), on every load.
    """
    root = Path(os.path.abspath(os.path.expanduser(root)))
    say = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    files, class_names = _scan(root)
    contents: dict[str, tuple[int, str]] = {}
    bad: list[tuple[str, str]] = []
    for rel, _ in files:
        try:
            data = _read(root / rel)
        except _BadImage as e:
            bad.append((rel, str(e)))
            continue
        contents[rel] = (len(data), hashlib.sha256(data).hexdigest())
    settings = {"image_size": image_size, "skip_bad_images": skip_bad_images, "background": list(BACKGROUND)}
    all_digests = {**{rel: (-1, why) for rel, why in bad}, **contents}
    key = _cache_key(root, files, all_digests, settings)
    folder = _cache_dir()
    npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    cached = _read_cache(npy, meta_path)
    if cached is None:
        cached = _build(root, files, class_names, bad, image_size, skip_bad_images, npy, meta_path)
    if cached.skipped and cached.cache not in _WARNED:  # once per process, not once per split
        _WARNED.add(cached.cache)
        say(f"{len(cached.skipped)} bad image file(s) in {root} skipped (--skip-bad-images):")
        for rel, why in cached.skipped[:20]:
            say(f"  {rel}: {why}")
    return cached


def _build(
    root: Path,
    files: Sequence[tuple[str, int]],
    class_names: tuple[str, ...],
    bad: list[tuple[str, str]],
    image_size: int | None,
    skip_bad_images: bool,
    npy: Path,
    meta_path: Path,
) -> FolderData:
    """Read every header (channels, sizes, bad files), then decode into the cache."""
    bad_names = {rel for rel, _ in bad}
    good: list[tuple[str, int]] = []
    gray, sizes = True, set()
    for rel, label in files:
        if rel in bad_names:
            continue
        try:
            image = _open(_read(root / rel))
        except _BadImage as e:
            bad.append((rel, str(e)))
            continue
        gray &= image.mode in _GRAY_MODES  # a transparent gray pixel on white is still gray
        sizes.add(image.size)
        good.append((rel, label))
    channels = 1 if gray else 3
    decoded: list[tuple[str, int, np.ndarray]] = []
    # Every file is decoded (and resized) before the cache file is sized, so a truncated file found
    # now is reported with the others and never leaves a gap in the cache; the cost is that this
    # first build holds the decoded images in memory once (later loads only map the file).
    for rel, label in good:
        try:
            decoded.append((rel, label, _decode(_read(root / rel), channels, image_size)))
        except _BadImage as e:
            bad.append((rel, str(e)))
    bad.sort()
    if bad and not skip_bad_images:
        raise _bad_files_error(root, bad)
    if not decoded:
        raise DataError(f"{root}: none of the {len(files)} image files could be read")
    shapes = {arr.shape for _, _, arr in decoded}
    if len(shapes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:5])
        raise DataError(
            f"{root}: the images have {len(sizes)} different sizes ({listed}{', ...' if len(sizes) > 5 else ''})",
            hint=["pass --image-size N: each image's short side is resized to N and the centre N x N kept"],
        )
    decoded.sort(key=lambda item: (is_heldout(item[0]), item[0]))  # train rows first, each split by path
    n_train = sum(not is_heldout(rel) for rel, _, _ in decoded)
    shape = (len(decoded), *decoded[0][2].shape)

    def fill(out: np.ndarray) -> None:
        for i, (_, _, arr) in enumerate(decoded):
            out[i] = arr

    from .io import atomic_write_text

    npy.parent.mkdir(parents=True, exist_ok=True)
    _write_npy_atomically(npy, fill, shape)
    meta = {
        "version": CACHE_VERSION,
        "root": str(root),
        "shape": list(shape),
        "n_train": n_train,
        "class_names": list(class_names),
        "files": [rel for rel, _, _ in decoded],
        "labels": [label for _, label, _ in decoded],
        "skipped": [list(item) for item in bad],
    }
    atomic_write_text(meta_path, json.dumps(meta) + "\n")  # last: its presence says the .npy is complete
    cached = _read_cache(npy, meta_path)
    if cached is None:
        raise DataError(f"{npy}: the folder cache just written cannot be read back")
    return cached
