"""What a person sees of a run: metrics.jsonl, TensorBoard events, reconstruction grids and a loss curve (PNG)."""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mae_flax.files import atomic_path, is_remote
from mae_flax.videomae import pictures
from mae_flax.visualize import reconstruction_panels, save_grid


class MetricsWriter:
    """Appends one JSON line per logged step to workdir/metrics.jsonl and mirrors it to TensorBoard.

    In a remote workdir (gs://...) both are kept on this machine and uploaded whole at each logged step and at
    close: an object store cannot append, and tensorboardX's own GCS writer would upload again when garbage
    collected at interpreter exit, retrying for two minutes if the store no longer answers."""

    def __init__(self, workdir):
        import tensorboardX  # only process 0 writes; imports protobuf, a second and a half

        self.path = workdir / 'metrics.jsonl'
        self.lines = None  # a remote metrics.jsonl, line by line (rewritten whole)
        self.events = None  # a remote workdir's tensorboard/ folder, and the local one its events are written in
        if is_remote(workdir):
            self.lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
            self.events = workdir / 'tensorboard', tempfile.TemporaryDirectory(prefix='mae-tensorboard-')
        logdir = self.events[1].name if self.events else str(workdir / 'tensorboard')
        self.tensorboard = tensorboardX.SummaryWriter(logdir)

    def write(self, step, metrics):
        line = json.dumps({'step': step, **metrics}) + '\n'
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)
        if self.lines is None:
            with open(self.path, 'a') as file:
                file.write(line)
        else:
            self.lines.append(line)
            self.upload()

    def upload(self):
        """A remote workdir: metrics.jsonl and the TensorBoard event files as they are now."""
        self.path.write_text(''.join(self.lines))
        self.tensorboard.flush()
        remote, local = self.events
        for file in sorted(Path(local.name).iterdir()):
            (remote / file.name).write_bytes(file.read_bytes())

    def close(self):
        self.tensorboard.close()
        if self.events:
            try:
                self.upload()
            finally:
                self.events[1].cleanup()


def read_metrics(path):
    """{step: record}; a resumed run logs again the steps after its last checkpoint, and the latest line wins.
    A line cut off by a crash is skipped."""
    records = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record['step']] = record
    return dict(sorted(records.items()))


def save_reconstructions(path, images, pred_pixel_values, masked_indices, spec):
    """The grid (original | masked | reconstruction | pasted) for standardised images, drawn in pixel colours; for
    clips (a video model), the frame strips of mae_flax.videomae.pictures."""
    if spec.num_frames is not None:
        return pictures.save_strips(path, images, pred_pixel_values, masked_indices, spec)
    panels = reconstruction_panels(images, pred_pixel_values, masked_indices, spec.patch_size, spec.norm_pix_loss)
    scale = max(1, 128 // images.shape[1])
    return save_grid({name: spec.denormalize(panel) for name, panel in panels.items()}, path, scale=scale)


def _ticks(low, high, count=5):
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def save_loss_curve(records, path, size=(720, 420)):
    """Training loss (and the fixed-batch eval loss, where logged) against step, and beside it, where logged, the
    held-out photos' figure and the training-free blur's (mae_flax.heldout), as a PNG; PIL only."""
    losses = curve(
        records,
        [('loss', 'train loss', 'line'), ('eval_loss', 'eval loss (fixed images and masks)', 'dots')],
        'MAE pretraining: reconstruction loss of the masked patches',
        'loss (MSE, standardised pixels)',
        size,
    )
    heldout = curve(
        records,
        [('heldout_ratio', 'the model', 'line+dots'), ('blur_ratio', 'a blur of the visible patches', 'line')],
        "held-out photos: masked-patch error / the mean colour fill's",
        'ratio (lower is better)',
        size,
    )
    return save_side_by_side((losses, heldout), path, size)


def save_classify_curve(records, path, command, size=(600, 400)):
    """Two panels: the training and validation losses, and the validation top-1, against step."""
    losses = curve(
        records,
        [
            ('loss', 'train loss (the training targets: smoothed, mixed if on)', 'line'),
            ('val_loss', 'validation loss', 'dots'),
        ],
        f'{command}: cross-entropy',
        'loss',
        size,
    )
    accuracy = curve(records, [('val_top1', 'validation top-1', 'line+dots')], f'{command}: accuracy', 'top-1 %', size)
    return save_side_by_side((losses, accuracy), path, size)


def save_side_by_side(panels, path, size):
    """The panels that are drawn (not None), left to right, as one PNG written atomically; None if none is."""
    panels = [panel for panel in panels if panel is not None]
    if not panels:
        return None
    image = Image.new('RGB', (sum(panel.width for panel in panels), size[1]), 'white')
    for i, panel in enumerate(panels):
        image.paste(panel, (i * size[0], 0))
    with atomic_path(path) as tmp:
        image.save(tmp, format='PNG')
    return path


COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44))


def curve(records, series, title, ylabel, size):
    """A PIL image of `series` [(metric, legend, 'line' | 'dots' | 'line+dots')] against step, or None if
    no record holds any of them."""
    points = [[(step, record[name]) for step, record in records.items() if name in record] for name, _, _ in series]
    if not any(points):
        return None
    steps = np.array([step for group in points for step, _ in group], dtype=np.float64)
    values = np.array([value for group in points for _, value in group], dtype=np.float64)
    width, height = size
    left, right, top, bottom = 90, 20, 50, 50
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low + 1.0
    first, last = float(steps.min()), float(steps.max())
    last = last if last > first else first + 1.0

    def xy(step, loss):
        x = left + (step - first) / (last - first) * (width - left - right)
        y = top + (high - loss) / (high - low) * (height - top - bottom)
        return x, y

    image = Image.new('RGB', size, 'white')
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle((left, top, width - right, height - bottom), outline='black')
    for value in _ticks(low, high):
        _, y = xy(first, value)
        draw.line((left - 5, y, left, y), fill='black')
        draw.text((24, y - 6), f'{value:.4g}', fill='black', font=font)
    for value in _ticks(first, last):
        x, _ = xy(value, low)
        draw.line((x, height - bottom, x, height - bottom + 5), fill='black')
        draw.text((x - 12, height - bottom + 8), f'{math.floor(value)}', fill='black', font=font)
    draw.text((width // 2 - 15, height - 22), 'step', fill='black', font=font)
    draw.text(((width - draw.textlength(title, font=font)) // 2, 6), title, fill='black', font=font)
    # the y axis: its label written sideways
    label_image = Image.new('RGB', (int(draw.textlength(ylabel, font=font)) + 4, 14), 'white')
    ImageDraw.Draw(label_image).text((2, 1), ylabel, fill='black', font=font)
    label_image = label_image.rotate(90, expand=True)
    image.paste(label_image, (6, top + (height - top - bottom - label_image.height) // 2))
    legend_x = left + 10
    for (_, legend, style), group, color in zip(series, points, COLORS, strict=False):
        if not group:
            continue
        if 'line' in style and len(group) > 1:
            draw.line([xy(step, value) for step, value in group], fill=color, width=2)
        if 'dots' in style:
            for step, value in group:
                x, y = xy(step, value)
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        draw.text((legend_x, 28), legend, fill=color, font=font)
        legend_x += int(draw.textlength(legend, font=font)) + 20
    return image
