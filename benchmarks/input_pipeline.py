"""Images/s of mae-train's input pipeline (the real `data.train_iterator`): in-process threads, then 1, 2, ...
worker processes, on a folder of 500x375 JPEGs and on ArrayRecord shards of the same files, with and without
JPEG draft decoding; also images per CPU-second (this process and its workers, user + system time).

    python -m benchmarks.input_pipeline                       # 224px crops, up to 2 workers (a 2-core machine)
    python -m benchmarks.input_pipeline --workers 0,1,2,4,8 --image-size 224,112 --images 1024

The images are the photographs shipped with scikit-image, cut and resized to 500x375 (ImageNet's typical size)
and saved as JPEG quality 90, generated into a temporary folder. A configuration is timed after its first batches
(worker start-up and warm-up are not counted).
"""

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage
from PIL import Image

from mae_flax.cli import prepare
from mae_flax.configs import mae
from mae_flax.files import atomic_path
from mae_flax.train import data

RESULTS_DIR = Path(__file__).parent / 'results'
IMAGE_SHAPE = (375, 500)  # height, width: most of ImageNet's photographs
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def make_images(folder, count, seed=0):
    """`count` 500x375 JPEGs cut from scikit-image's photographs at random places and scales."""
    rng = np.random.default_rng(seed)
    photos = []
    for name in data.DEFAULT_PHOTOS:
        with Image.open(Path(skimage.__file__).parent / 'data' / name) as image:
            photos.append(data.to_8bit(image, 3, name))
    height, width = IMAGE_SHAPE
    for index in range(count):
        photo = photos[index % len(photos)]
        side = rng.uniform(0.5, 1.0)
        crop_width, crop_height = photo.width * side, photo.width * side * height / width
        crop_height = min(crop_height, photo.height)
        left, top = rng.uniform(0, photo.width - crop_width), rng.uniform(0, photo.height - crop_height)
        box = (left, top, left + crop_width, top + crop_height)
        image = photo.resize((width, height), Image.Resampling.BICUBIC, box=box)
        image.save(folder / f'{index:06d}.jpg', quality=90)


def cpu_seconds(pids):
    """User + system CPU seconds of the given processes (from /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return total


def measure(source, *, image_size, workers, draft, batch, batches, threads, prefetch):
    """Images/s and images per CPU-second of `batches` batches after the warm-up."""
    config = mae.get_config('smoke').data
    config.update(workers=workers, draft=draft, num_threads=threads, prefetch=prefetch)
    iterator = data.train_iterator(source, config, image_size, 0, batch, 0, 1)
    try:
        for _ in range(max(2, 2 * workers)):  # start-up: the workers spawn and fill their buffers
            next(iterator)
        pids = [os.getpid(), *(child.pid for child in multiprocessing.active_children())]
        start_wall, start_cpu = time.perf_counter(), cpu_seconds(pids)
        for _ in range(batches):
            next(iterator)
        wall, cpu = time.perf_counter() - start_wall, cpu_seconds(pids) - start_cpu
    finally:
        iterator.close()
    images = batch * batches
    return dict(images_per_s=images / wall, images_per_cpu_s=images / cpu, wall_s=wall, cpu_s=cpu, images=images)


def benchmark(*, images=512, image_sizes=(224,), workers=(0, 1, 2), batch=32, batches=24, threads=4, prefetch=4):
    """All configurations; returns a JSON-ready dict."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = Path(tmp) / 'images', Path(tmp) / 'shards'
        folder.mkdir()
        make_images(folder, images)
        prepare.pack(folder, shards, max(1, min(8, images // 64)))
        sources = {
            'folder': data.make_source(str(folder), 224, 3),
            'array_record': data.make_source(str(shards), 224, 3),
        }
        for image_size in image_sizes:
            for source_name, source in sources.items():
                for draft in (False, True):
                    for count in workers:
                        row = dict(source=source_name, image_size=image_size, draft=draft, workers=count)
                        # per process: in-process, `threads` threads; each worker runs 2 (its own GIL)
                        per_process = threads if count == 0 else 2
                        row.update(
                            measure(
                                source,
                                image_size=image_size,
                                workers=count,
                                draft=draft,
                                batch=batch,
                                batches=batches,
                                threads=per_process,
                                prefetch=prefetch,
                            ),
                            threads_per_process=per_process,
                        )
                        rows.append(row)
                        print(format_row(row), flush=True)
    machine = dict(
        cpu=_cpu_name(),
        cpus=len(os.sched_getaffinity(0)),
        python=platform.python_version(),
        load_average_1min=os.getloadavg()[0],  # other jobs on the machine: wall-clock rates suffer, CPU-s less so
    )
    settings = dict(images=images, image_shape=IMAGE_SHAPE, batch=batch, batches=batches, prefetch=prefetch)
    return dict(machine=machine, settings=settings, results=rows)


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'unknown'


def format_row(row):
    return (
        f'| {row["source"]} | {row["image_size"]} | {"on" if row["draft"] else "off"} | {row["workers"]} | '
        f'{row["images_per_s"]:.0f} | {row["images_per_cpu_s"]:.0f} |'
    )


def _numbers(text):
    return tuple(int(part) for part in text.split(','))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.input_pipeline', description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=512, help='JPEGs to generate (default 512)')
    parser.add_argument('--image-size', type=_numbers, default=(224,), help='crop sizes, e.g. 224,112')
    parser.add_argument('--workers', type=_numbers, default=(0, 1, 2), help='worker process counts, e.g. 0,1,2')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--batches', type=int, default=24, help='timed batches per configuration')
    parser.add_argument('--out', type=Path, default=RESULTS_DIR / 'input_pipeline-cpu.json')
    args = parser.parse_args(argv)
    print('| source | crop px | draft | workers | images/s | images/CPU-s |\n|---|---|---|---|---|---|')
    results = benchmark(
        images=args.images,
        image_sizes=args.image_size,
        workers=args.workers,
        batch=args.batch,
        batches=args.batches,
    )
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
