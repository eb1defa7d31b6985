"""Fixed tables: arrays a model computes with but never trains (the official family's sin-cos position
embeddings). A FixedTable is an nnx.Variable that is not an nnx.Param, so it stays outside the optimizer, weight
decay and the parameter count. A model builds it from the table it computes (`model.computed_tables()`); a
checkpoint whose table differs (transformers' `_init_weights` leaves zeros) replaces it, and the model then
computes with the file's table, as transformers does. Such a table travels with the model: in its files, and in a
mae-train workdir as `fixed_tables.safetensors` beside config.json."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

TOLERANCE = 1e-5  # float32 rounding of a table computed in float64: a file's copy within it is the computed one


class FixedTable(nnx.Variable):
    """A table the model computes with and never trains."""


def tables_of(model):
    """{dotted path: FixedTable} of a model's fixed tables."""
    return {'.'.join(map(str, path)): node for path, node in nnx.iter_graph(model) if isinstance(node, FixedTable)}


def computed(model):
    """{dotted path: the table the model computes} (float32 numpy), for a model that has fixed tables."""
    return model.computed_tables() if tables_of(model) else {}


def describe(array, reference):
    """How a table differs from the computed one, in words: 'all zeros', or the max abs difference."""
    array = np.asarray(array)
    if not array.any():
        return 'all zeros'
    return f'max abs difference {np.abs(array - reference).max():.3g} from the sin-cos table'


def is_computed(array, reference):
    return array.shape == reference.shape and np.allclose(array, reference, rtol=0, atol=TOLERANCE)


def fill_computed(model):
    """Sets every fixed table to the computed one (an abstract model's are shapes only); returns the model."""
    for path, table in computed(model).items():
        tables_of(model)[path].set_value(jnp.asarray(table))
    return model


def own_tables(model):
    """{dotted path: numpy table} of the tables that are not the computed ones: what a file or a workdir keeps."""
    reference = computed(model)
    return {
        path: np.asarray(node.get_value())
        for path, node in tables_of(model).items()
        if not is_computed(np.asarray(node.get_value()), reference[path])
    }


def set_tables(model, tables):
    """Sets the given tables ({dotted path: array}) on the model; returns it."""
    nodes = tables_of(model)
    unknown = sorted(set(tables) - set(nodes))
    if unknown:
        raise ValueError(f'{type(model).__name__} has no fixed table {unknown[0]!r} (it has {", ".join(nodes)})')
    for path, value in tables.items():
        if tuple(np.shape(value)) != tuple(nodes[path].get_value().shape):
            raise ValueError(f'fixed table {path!r} has shape {np.shape(value)}, the model {nodes[path].shape}')
        nodes[path].set_value(jnp.asarray(value, jnp.float32))
    return model
