"""What a family's `infer` shares: the hyperparameters found so far, and where each came from."""

import math

from mae_core.errors import UsageError
from mae_core.fields import compact, pair

INFERRED, ASSUMED = 'inferred', 'assumed'


class Fields:
    """The values found so far and where each came from; `given` is {field: (value, source)}."""

    def __init__(self, given):
        self.given, self.values, self.sources = given, {}, {}

    def read(self, field, value, source=INFERRED):
        """A value the weights fix; a given one must agree (and is then reported as given)."""
        if field in self.given:
            given, given_source = self.given[field]
            same = compact(given) == compact(value) if field.endswith('_size') else given == value
            if not same:
                raise UsageError(
                    f'{field} = {given} ({given_source}) does not fit the weights, which have {field} = {value}'
                )
            source = given_source
        self.values[field], self.sources[field] = value, source
        return value

    def choose(self, field, default):
        """A value the weights do not fix: the given one, or `default`, assumed."""
        value, source = self.given.get(field, (default, ASSUMED))
        self.values[field], self.sources[field] = value, source
        return value


def read_image_size(fields, field, patch, num_patches, table):
    """The image size: a given one must split into the `num_patches` patches `table` has; else a square grid."""
    patch = pair(patch)
    if field in fields.given:
        image = pair(compact(fields.given[field][0]))
        grid = (image[0] // patch[0], image[1] // patch[1])
        if image[0] % patch[0] or image[1] % patch[1] or grid[0] * grid[1] != num_patches:
            raise UsageError(
                f'{field} {image} in patches of {patch} does not give the {num_patches} patches the {table} has: '
                f'check --{field}'
            )
        return fields.read(field, compact(image))
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise UsageError(f'{num_patches} patches are not a square grid: pass --{field} (height x width)')
    return fields.read(field, compact((side * patch[0], side * patch[1])), f'{INFERRED}, square assumed')
