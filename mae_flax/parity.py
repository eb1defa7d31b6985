"""The parity library: run a mae_torch model and its mae_flax twin on the same images and noise, and compare them
stage by stage, in gradients too. Used by `mae-parity` and by the parity suite (parity_tests/), so a check means
the same in both. torch is imported inside the functions that need it.

A comparison of torch's `expected` with Flax's `actual` measures max |expected - actual| against the scale of
`expected` (max |expected|), and passes when max |expected - actual| <= atol + rtol * scale.
"""

import contextlib

import jax
import numpy as np
from flax import nnx

from mae_core.contract import STAGES
from mae_flax.convert import to_torch_state_dict, torch_table
from mae_flax.fixed_tables import FixedTable


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


def scaled_error(expected, actual):
    """max |expected - actual| / max |expected|: the error in units of the tensor's own scale."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f'shapes differ: {expected.shape} vs {actual.shape}')
    return float(np.abs(expected - actual).max(initial=0.0) / max(np.abs(expected).max(initial=0.0), 1e-30))


def compare(name, expected, actual, rtol, atol=0.0):
    """One row of a report: {name, max_abs_diff, rel_diff (of the scale), passed}."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f'{name}: shapes differ: {expected.shape} vs {actual.shape}')
    max_abs = float(np.abs(expected - actual).max(initial=0.0))
    scale = float(np.abs(expected).max(initial=0.0))
    return {
        'name': name,
        'max_abs_diff': max_abs,
        'rel_diff': max_abs / scale if scale > 0 else max_abs,
        'passed': bool(max_abs <= atol + rtol * scale),
    }


def torch_outputs(model, images, noise, device='cpu', grads=False):
    """(MAEOutput as numpy, {torch key or 'input': gradient}) from a mae_torch model on (b, h, w, c) images (or
    (b, t, h, w, c) videos: torch takes the channels before the height, (b, c, h, w) and (b, t, c, h, w)).

    Parameters the loss never reaches (the encoder's cls_token) have no torch gradient: zeros, as JAX gives."""
    import torch

    model = model.to(device)
    # copies: torch wants writable arrays, and those from JAX are read-only
    img = torch.from_numpy(np.array(np.moveaxis(images, -1, -3))).to(device).requires_grad_(grads)  # (b, c, h, w)
    with torch.set_grad_enabled(grads):
        out = model(img, noise=torch.from_numpy(np.array(noise)).to(device), return_outputs=True)
        if grads:
            out.loss.backward()
    # numpy has no bfloat16: such tensors come back as float32, which holds them exactly
    out = jax.tree.map(lambda x: (x.float() if x.dtype == torch.bfloat16 else x).detach().cpu().numpy(), out)
    if not grads:
        return out, {}
    gradients = {
        name: np.zeros(tuple(param.shape), np.float32) if param.grad is None else param.grad.cpu().numpy()
        for name, param in model.named_parameters()
        if param.requires_grad  # not the official family's fixed position embeddings
    }
    gradients['input'] = np.moveaxis(img.grad.cpu().numpy(), -3, -1)
    return out, gradients


def flax_outputs(model, images, noise, grads=False):
    """(MAEOutput as numpy, {torch key or 'input': gradient}) from a mae_flax model, on the default device;
    the gradients are named and laid out as torch's, through the family's converter table."""

    def loss_fn(model, img, noise):
        out = model(img, noise=noise, return_outputs=True)
        return out.loss, out

    # jitted: run eagerly, JAX would compile each of a few hundred operations on its own (~10 s on a CPU)
    if not grads:
        return jax.device_get(nnx.jit(loss_fn)(model, images, noise)[1]), {}
    (model_grads, image_grads), out = nnx.jit(nnx.grad(loss_fn, argnums=(0, 1), has_aux=True))(model, images, noise)
    # a copy of the model holding the gradients in its weights: the converter's table names them as torch does
    grad_holder = nnx.clone(model)
    nnx.update(grad_holder, model_grads)
    # keys with no gradient: the ones written for layouts that need them, and the fixed tables
    constants = {
        key for row in torch_table(model) if row.param is None or isinstance(row.param, FixedTable) for key in row.keys
    }
    gradients = {key: value for key, value in to_torch_state_dict(grad_holder).items() if key not in constants}
    gradients['input'] = np.asarray(image_grads)
    return jax.device_get(out), gradients


def compare_outputs(torch_out, flax_out, rtol, atol=0.0, torch_grads=None, flax_grads=None):
    """(stages, gradients): report rows for the mask, each stage of mae_core.contract.STAGES, the predictions and
    the loss; and, where given, every gradient."""
    same_mask = np.array_equal(torch_out.masked_indices, flax_out.masked_indices)
    stages = [{'name': 'masking', 'max_abs_diff': 0.0 if same_mask else 1.0, 'rel_diff': 0.0, 'passed': same_mask}]
    stages += [
        compare(stage, torch_out.intermediates[stage], flax_out.intermediates[stage], rtol, atol) for stage in STAGES
    ]
    stages.append(compare('predictions', torch_out.pred_pixel_values, flax_out.pred_pixel_values, rtol, atol))
    stages.append(compare('loss', torch_out.loss, flax_out.loss, rtol, atol))
    gradients = [compare(key, value, flax_grads[key], rtol, atol) for key, value in (torch_grads or {}).items()]
    return stages, gradients


def table(rows, title):
    lines = [f'{title:<52}{"max abs diff":>14}{"rel diff":>12}  result']
    lines += [
        f'{row["name"]:<52}{row["max_abs_diff"]:>14.2e}{row["rel_diff"]:>12.2e}  {"pass" if row["passed"] else "FAIL"}'
        for row in rows
    ]
    return '\n'.join(lines)
