"""mae-parity CHECKPOINT: the torch model and its Flax conversion compute the same MAE, stage by stage.

    mae-parity mae.pt --heads 8 --decoder_heads 16             # 4 random images, a table, exit 0 or 1
    mae-parity mae.pt --images val/ --batch 8 --grads --json   # your images, the gradients too, for CI

The checkpoint is loaded into mae_torch as it is and into mae_flax through the converter; both get the same
images and masking noise, in strict float32 (no TF32, no bf16 matmul passes), so what is left is summation order.
"""

import argparse
import contextlib
import json
import sys

import jax
import numpy as np
from flax import nnx

from mae_flax.cli.checkpoint import load_checkpoint, torch_model
from mae_flax.cli.common import (
    UsageError,
    add_model_flags,
    given_flags,
    image_files,
    masking_noise,
    note,
    read_images,
    run_cli,
)
from mae_flax.convert import to_torch_state_dict
from mae_flax.patchify import pair

PROG = 'mae-parity'
STAGES = (
    ('patch embedding', 'patch_embedding'),
    ('encoder', 'encoded_tokens'),
    ('decoder input', 'decoder_input'),
    ('decoder', 'decoded_tokens'),
)
TOLERANCE_HELP = """\
tolerances: a stage passes when max |torch - flax| <= atol + rtol * max |torch|; "rel diff" is
max |torch - flax| / max |torch|. Both backends compute in float32 with different summation orders, so a
correct conversion differs by rounding only: ~1e-7 relative on well-scaled images, up to ~1e-3 on the
embeddings of badly conditioned ones (e.g. 50 + 0.01 * randn: the first LayerNorm subtracts a mean 5000 times
the spread, which multiplies float32's rounding by 5000); gradients sum over the batch and every token and
reach ~1e-3 there too. A wrong conversion (a transposed or swapped weight, a wrong LayerNorm, a missing
position row) is off by O(1), so the default rtol 1e-2 separates the two with a wide margin on either side;
tighten it for well-scaled inputs. heads vs dim_head cannot be checked this way: both sides use the config.

exit codes: 0 every stage passes, 1 some stage does not, 2 bad input (one line on stderr)."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,  # '--dim 8' must not pass for --dim_head
        description='Check that a torch MAE checkpoint and its Flax conversion compute the same function.',
        epilog=TOLERANCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('checkpoint', metavar='CHECKPOINT', help='torch layout (.pt/.pth/.safetensors) or Flax')
    parser.add_argument(
        '--images', metavar='DIR', help='a folder of images, resized to the model size (default: randn)'
    )
    parser.add_argument('--batch', type=int, default=4, help='how many images (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random images and the masking noise')
    parser.add_argument(
        '--device', choices=('cpu', 'gpu', 'tpu'), default='cpu', help='(default cpu; torch on CPU for tpu)'
    )
    parser.add_argument('--rtol', type=float, default=1e-2, help='relative tolerance (default 1e-2, see below)')
    parser.add_argument('--atol', type=float, default=1e-6, help='absolute tolerance (default 1e-6)')
    parser.add_argument('--grads', action='store_true', help='also compare the gradient of every weight and the input')
    parser.add_argument('--json', action='store_true', help='print the results as JSON instead of a table')
    add_model_flags(parser)
    return parser


@contextlib.contextmanager
def strict_float32():
    """True float32 matmuls on both sides: TF32 (GPU) or bf16 passes (TPU) alone move results by ~1e-3."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision('highest'):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def devices(name):
    """(torch device, jax device) for --device."""
    import torch

    try:
        jax_device = jax.devices(name)[0]
    except RuntimeError as error:
        raise UsageError(f'--device {name}: JAX has no {name} here (it has {jax.default_backend()})') from error
    if name == 'gpu':
        if not torch.cuda.is_available():
            raise UsageError('--device gpu: torch sees no CUDA device (is a CPU-only torch installed?)')
        return torch.device('cuda'), jax_device
    return torch.device('cpu'), jax_device  # torch has no TPU: its side runs on the CPU


def input_images(args, config, batch):
    """(b, h, w, c) float32 images: the folder's first `batch`, or standard normal ones."""
    vit = config['vit']
    if args.images is None:
        height, width = pair(vit['image_size'])
        return np.random.default_rng(args.seed).standard_normal((batch, height, width, vit['channels']), np.float32)
    files = image_files(args.images)[:batch]
    if len(files) < batch:
        note(PROG, f'{args.images} has {len(files)} images, fewer than --batch {batch}: using them all')
    return read_images(files, vit['image_size'], vit['channels'], PROG)


def run_torch(model, images, noise, device, grads):
    """(MAEOutput as numpy, {torch key or 'input': gradient}) from mae_torch."""
    import torch

    model = model.to(device)
    img = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1))).to(device).requires_grad_(grads)
    with torch.set_grad_enabled(grads):
        out = model(img, noise=torch.from_numpy(noise).to(device), return_outputs=True)
        if grads:
            out.loss.backward()
    out = jax.tree.map(lambda x: x.detach().cpu().numpy(), out)
    if not grads:
        return out, {}
    gradients = {
        name: np.zeros(tuple(param.shape), np.float32) if param.grad is None else param.grad.cpu().numpy()
        for name, param in model.named_parameters()
    }
    gradients['input'] = np.moveaxis(img.grad.cpu().numpy(), 1, -1)
    return out, gradients


def run_flax(model, images, noise, device, grads):
    """(MAEOutput as numpy, {torch key or 'input': gradient}) from mae_flax, gradients mapped by the converter."""

    def loss_fn(model, img, noise):
        out = model(img, noise=noise, return_outputs=True)
        return out.loss, out

    # jitted: run eagerly, JAX would compile each of a few hundred operations on its own (~10 s on a CPU)
    with jax.default_device(device):
        img, noise = jax.device_put(images, device), jax.device_put(noise, device)
        if not grads:
            return jax.device_get(nnx.jit(loss_fn)(model, img, noise)[1]), {}
        grad_fn = nnx.jit(nnx.grad(loss_fn, argnums=(0, 1), has_aux=True))
        (model_grads, image_grads), out = grad_fn(model, img, noise)
    # a copy of the model holding the gradients in its weights: the converter's table names them as torch does
    grad_holder = nnx.clone(model)
    nnx.update(grad_holder, model_grads)
    gradients = to_torch_state_dict(grad_holder)
    gradients['input'] = np.asarray(image_grads)
    return jax.device_get(out), gradients


def compare(name, expected, actual, rtol, atol):
    """One row of the table: torch's `expected` against Flax's `actual` (same shapes: same config)."""
    expected, actual = np.asarray(expected, np.float64).ravel(), np.asarray(actual, np.float64).ravel()
    max_abs = float(np.abs(expected - actual).max(initial=0.0))
    scale = float(np.abs(expected).max(initial=0.0))
    return {
        'name': name,
        'max_abs_diff': max_abs,
        'rel_diff': max_abs / scale if scale > 0 else max_abs,
        'passed': max_abs <= atol + rtol * scale,
    }


def results(torch_out, flax_out, torch_grads, flax_grads, rtol, atol):
    same_mask = np.array_equal(torch_out.masked_indices, flax_out.masked_indices)
    stages = [{'name': 'masking', 'max_abs_diff': 0.0 if same_mask else 1.0, 'rel_diff': 0.0, 'passed': same_mask}]
    stages += [
        compare(name, torch_out.intermediates[key], flax_out.intermediates[key], rtol, atol) for name, key in STAGES
    ]
    stages.append(compare('predictions', torch_out.pred_pixel_values, flax_out.pred_pixel_values, rtol, atol))
    stages.append(compare('loss', torch_out.loss, flax_out.loss, rtol, atol))
    gradients = [compare(key, value, flax_grads[key], rtol, atol) for key, value in torch_grads.items()]
    return stages, gradients


def table(rows, title):
    lines = [f'{title:<52}{"max abs diff":>14}{"rel diff":>12}  result']
    lines += [
        f'{row["name"]:<52}{row["max_abs_diff"]:>14.2e}{row["rel_diff"]:>12.2e}  {"pass" if row["passed"] else "FAIL"}'
        for row in rows
    ]
    return '\n'.join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise UsageError(f'--batch must be at least 1, got {args.batch}')
    torch_device, jax_device = devices(args.device)
    checkpoint = load_checkpoint(args.checkpoint, given_flags(args))
    if checkpoint.config['model'] != 'MAE':
        raise UsageError(f'{args.checkpoint} is a ViT without an MAE decoder; mae-parity compares MAE checkpoints')
    images = input_images(args, checkpoint.config, args.batch)
    noise = masking_noise(args.seed, len(images), checkpoint.model.num_patches)

    with strict_float32():
        torch_out, torch_grads = run_torch(torch_model(checkpoint), images, noise, torch_device, args.grads)
        flax_out, flax_grads = run_flax(checkpoint.model, images, noise, jax_device, args.grads)
    stages, gradients = results(torch_out, flax_out, torch_grads, flax_grads, args.rtol, args.atol)
    passed = all(row['passed'] for row in stages + gradients)

    source = args.images or f'random normal (seed {args.seed})'
    if args.json:
        report = dict(checkpoint=str(args.checkpoint), device=args.device, images=source, batch=len(images))
        report |= dict(rtol=args.rtol, atol=args.atol, passed=passed, stages=stages, gradients=gradients)
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(
            f'{args.checkpoint} on {args.device}: {len(images)} images from {source}; rtol {args.rtol}, atol {args.atol}'
        )
        print(table(stages, 'stage'))
        if gradients:
            print(table(gradients, 'gradient of'))
        failed = sum(not row['passed'] for row in stages + gradients)
        print(f'{"all pass" if passed else f"{failed} of {len(stages) + len(gradients)} FAIL"}')
    return 0 if passed else 1


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()
