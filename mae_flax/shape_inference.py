"""What a family's `infer` shares: the hyperparameters found so far, and where each came from."""

from mae_core.errors import UsageError
from mae_core.fields import compact

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
