"""Layers with torch's numerics, shared by every family: Linear with torch's init, LayerNorm with torch's
two-pass variance, exact GELU, and dropout that needs no stream when it drops nothing."""

import jax
import jax.numpy as jnp
from flax import nnx


def dot_general_2d(inputs, kernel, dimension_numbers, precision=None, **kwargs):
    """nnx.Linear's contraction with the leading axes flattened first: (..., in) -> (rows, in) @ (in, out).

    The same function as the 3-D dot; on the CPU it is ~20% faster per training step, since XLA then computes the
    kernel gradient as one 2-D matmul instead of transposing the 3-D cotangent into a copy first.
    """
    ((lhs_contracting, rhs_contracting), batch_dims) = dimension_numbers
    if lhs_contracting != (inputs.ndim - 1,) or rhs_contracting != (0,) or batch_dims != ((), ()):
        raise ValueError(f'dot_general_2d contracts the last input axis with the kernel rows, got {dimension_numbers}')
    rows = inputs.reshape(-1, inputs.shape[-1])  # (b * n, in)
    out = jax.lax.dot_general(rows, kernel, (((1,), (0,)), ((), ())), precision=precision, **kwargs)
    return out.reshape(*inputs.shape[:-1], kernel.shape[-1])  # (..., out)


def torch_linear(in_features, out_features, *, use_bias=True, dtype=None, rngs):
    """nnx.Linear with torch.nn.Linear's default init: weight and bias uniform in +-1/sqrt(in_features)."""
    bound = in_features**-0.5
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=jax.nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
        bias_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
        dot_general=dot_general_2d,
        rngs=rngs,
    )


def torch_layer_norm(dim, *, eps=1e-5, dtype=None, rngs):
    """nnx.LayerNorm as torch.nn.LayerNorm: eps 1e-5 unless given (Flax's default is 1e-6), and the two-pass
    variance (the fast one loses precision on inputs with a large mean)."""
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, dtype=dtype, rngs=rngs)


def gelu(x):
    """Exact GELU as torch computes it, x / 2 * (1 + erf(x / sqrt(2))), in float32 for low-precision inputs.

    jax.nn.gelu(approximate=False) goes through erfc, whose XLA CPU kernel (an exp and two polynomials) costs about
    twice erf's one rational polynomial: -4% per training step on the CPU (benchmarks/NOTES.md).
    """
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return (0.5 * x32 * (1 + jax.lax.erf(x32 * 2**-0.5))).astype(x.dtype)


def make_dropout(rate, *, rngs):
    # a stream is only needed when something is dropped
    return nnx.Dropout(rate, rngs=rngs if rate > 0 else None)


def xavier_linear(in_features, out_features, *, use_bias=True, dtype=None, rngs):
    """nnx.Linear initialised as facebookresearch/mae's Linears: xavier_uniform weights, zero biases (and its
    patch projection, a Linear on flattened patches)."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=jax.nn.initializers.xavier_uniform(),
        bias_init=jax.nn.initializers.zeros,
        dot_general=dot_general_2d,
        rngs=rngs,
    )


class DropPath(nnx.Module):
    """Stochastic depth (timm's DropPath): in training, each sample's residual branch is dropped with probability
    `rate` and the kept ones are scaled by 1 / (1 - rate); `eval()` (deterministic) passes it through. `rate` is
    state, not a Python attribute, so that the blocks of a scanned stack each hold their own (mae_flax.stack)."""

    def __init__(self, rate, *, rngs):
        self.rate = nnx.Variable(jnp.asarray(rate, jnp.float32))
        self.rngs = rngs['dropout'].fork()
        self.deterministic = False

    def __call__(self, x):
        if self.deterministic:
            return x
        keep = 1 - self.rate[...]
        kept = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(kept, x / keep.astype(x.dtype), jnp.zeros((), x.dtype))


def drop_path_rate(rate, index, depth):
    """Block `index`'s rate of `depth`: timm's linear rule, 0 for the first block up to `rate` for the last."""
    return rate * index / max(depth - 1, 1)


def head_batch_norm(dim, *, rngs):
    """torch.nn.BatchNorm1d(dim, affine=False, eps=1e-6) (facebookresearch/mae's linear probe): batch statistics in
    training (over the global batch under jit), running ones (momentum 0.1 in torch's terms) in eval."""
    return nnx.BatchNorm(
        dim, use_bias=False, use_scale=False, epsilon=1e-6, momentum=0.9, use_fast_variance=False, rngs=rngs
    )


def head_linear(in_features, out_features, std=0.0, *, dtype=None, rngs):
    """A classification head: weights from a normal truncated at 2 std (timm's trunc_normal_), zeros for std 0 (every
    class equally likely whatever the features: fine-tuning's start), zero bias."""
    kernel_init = jax.nn.initializers.truncated_normal(std) if std > 0 else jax.nn.initializers.zeros
    return nnx.Linear(
        in_features,
        out_features,
        dtype=dtype,
        kernel_init=kernel_init,
        bias_init=jax.nn.initializers.zeros,
        rngs=rngs,
    )
