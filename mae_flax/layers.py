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


def xavier_linear(in_features, out_features, *, dtype=None, rngs):
    """nnx.Linear initialised as facebookresearch/mae's Linears: xavier_uniform weights, zero biases (and its
    patch projection, a Linear on flattened patches)."""
    return nnx.Linear(
        in_features,
        out_features,
        dtype=dtype,
        kernel_init=jax.nn.initializers.xavier_uniform(),
        bias_init=jax.nn.initializers.zeros,
        dot_general=dot_general_2d,
        rngs=rngs,
    )
