"""What a person sees of a run: metrics.jsonl, TensorBoard events, reconstruction grids and a loss curve (PNG)."""

import json
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mae_flax.files import atomic_path
from mae_flax.visualize import reconstruction_panels, save_grid


class MetricsWriter:
    """Appends one JSON line per logged step to workdir/metrics.jsonl and mirrors it to TensorBoard."""

    def __init__(self, workdir):
        import tensorboardX  # only process 0 writes; imports protobuf, a second and a half

        self.path = workdir / 'metrics.jsonl'
        self.tensorboard = tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))

    def write(self, step, metrics):
        with open(self.path, 'a') as file:
            file.write(json.dumps({'step': step, **metrics}) + '\n')
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)

    def close(self):
        self.tensorboard.close()


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
    """The grid (original | masked | reconstruction | pasted) for standardised images, drawn in pixel colours."""
    panels = reconstruction_panels(images, pred_pixel_values, masked_indices, spec.patch_size, spec.norm_pix_loss)
    scale = max(1, 128 // images.shape[1])
    return save_grid({name: spec.denormalize(panel) for name, panel in panels.items()}, path, scale=scale)


def _ticks(low, high, count=5):
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def save_loss_curve(records, path, size=(720, 420)):
    """Training loss (and the fixed-batch eval loss, where logged) against step, as a PNG; PIL only."""
    train = [(step, record['loss']) for step, record in records.items() if 'loss' in record]
    evals = [(step, record['eval_loss']) for step, record in records.items() if 'eval_loss' in record]
    if not train and not evals:
        return None
    steps = np.array([step for step, _ in train + evals], dtype=np.float64)
    losses = np.array([value for _, value in train], dtype=np.float64)
    width, height = size
    left, right, top, bottom = 90, 20, 50, 50
    values = np.concatenate([losses, [value for _, value in evals]])
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
    title = 'MAE pretraining: reconstruction loss of the masked patches'
    draw.text(((width - draw.textlength(title, font=font)) // 2, 6), title, fill='black', font=font)
    # the y axis: its label written sideways
    label = 'loss (MSE, standardised pixels)'
    label_image = Image.new('RGB', (int(draw.textlength(label, font=font)) + 4, 14), 'white')
    ImageDraw.Draw(label_image).text((2, 1), label, fill='black', font=font)
    label_image = label_image.rotate(90, expand=True)
    image.paste(label_image, (6, top + (height - top - bottom - label_image.height) // 2))
    if len(train) > 1:
        draw.line([xy(step, value) for step, value in train], fill=(31, 119, 180), width=2)
    draw.text((left + 10, 28), 'train loss', fill=(31, 119, 180), font=font)
    if evals:
        for step, value in evals:
            x, y = xy(step, value)
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(214, 39, 40))
        draw.text((left + 100, 28), 'eval loss (fixed images and masks)', fill=(214, 39, 40), font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format='PNG')
    return path
