"""mae-prepare IMAGES OUT --shards N: packs a folder of images into N ArrayRecord shards that mae-train reads.

mae-prepare /data/imagenet/train /data/imagenet/train-shards --shards 1024
mae-train --config=mae_flax/configs/mae.py:vit_b16 --config.data.source=/data/imagenet/train-shards ...

Every image file under IMAGES (recursive, the suffixes mae-train reads) is stored as it is, its encoded bytes one
record, in mae-train's sorted order: record k of the shards is image k of the folder, so both sources give the same
crops for a seed. A file whose header no image reader recognises is left out, with a warning. Each shard
(OUT/NAME-00003-of-01024.array_record) is written under a temporary name and renamed when complete; mae-train
refuses a set whose count its names contradict.
"""

import io
import tempfile
from pathlib import Path

from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from mae_core.errors import UsageError
from mae_flax.cli.common import flag, make_parser, note, run_cli
from mae_flax.files import atomic_path
from mae_flax.train import data

PROG = 'mae-prepare'
WRITER_OPTIONS = 'group_size:1'  # one record per chunk: random access reads one record, as grain asks


def readable(path):
    """The file's bytes if an image reader recognises its header, else None (decoding is left to training)."""
    content = path.read_bytes()
    try:
        with Image.open(io.BytesIO(content)):
            return content
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def pack(folder, out, shards, name='images', prog=PROG):
    """Writes the images under `folder` into `shards` ArrayRecord files in `out`; returns (paths, images packed)."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise UsageError(f'{folder}: no such folder of images')
    files = data.image_index(folder)
    if not files:
        raise UsageError(
            f'no images in {folder}: expected {", ".join(data.IMAGE_SUFFIXES)} files (searched recursively)'
        )
    if shards < 1 or shards > len(files):
        raise UsageError(f'--shards must be between 1 and the {len(files)} images in {folder}, got {shards}')
    if out.exists() and not out.is_dir():
        raise UsageError(f'{out} exists and is not a folder: expected a folder for the shards')
    if out.is_dir() and any(out.glob('*.array_record')):
        raise UsageError(f'{out} already holds .array_record files: remove them or choose another folder')
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as error:
        raise UsageError(f'cannot write to {out}: {error.strerror or error}') from None
    paths, packed = [], 0
    for shard in range(shards):
        path = out / f'{name}-{shard:05d}-of-{shards:05d}.array_record'
        with atomic_path(path) as tmp:
            writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
            try:
                for relative in files[shard * len(files) // shards : (shard + 1) * len(files) // shards]:
                    content = readable(folder / relative)
                    if content is None:
                        note(prog, f'left out {folder / relative}: not an image file')
                        continue
                    writer.write(content)
                    packed += 1
            finally:
                writer.close()
        paths.append(path)
    return paths, packed


def main(argv=None):
    parser = make_parser(
        PROG,
        'Pack a folder of images (recursive) into ArrayRecord shards for --config.data.source.',
        'Exit codes: 0 written, 2 bad input.\n\n' + __doc__.split('\n\n')[1],
    )
    parser.add_argument('images', help='a folder of image files (searched recursively)')
    parser.add_argument('out', help='the folder to write the shards into (created if missing)')
    parser.add_argument(*flag('--shards'), type=int, default=1, help='how many files to write (default 1)')
    parser.add_argument(*flag('--name'), default='images', help='the shards are named NAME-00000-of-000N.array_record')
    args = parser.parse_args(argv)
    paths, packed = pack(args.images, args.out, args.shards, args.name)
    size = sum(path.stat().st_size for path in paths) / 2**20
    print(f'wrote {packed} images into {len(paths)} shards ({size:.1f} MiB) in {args.out}')
    return 0


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()
