"""Training configs, one Python file per family: `get_config(variant)` returns an ml_collections.ConfigDict."""
