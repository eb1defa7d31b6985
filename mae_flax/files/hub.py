"""Hugging Face Hub model ids (`facebook/vit-mae-base`, `org/name@revision`) as local folders, through huggingface_hub:
the local cache first, a download when online; `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` are honoured when called.
A local path always wins over an id that spells the same (a folder `org/name` under the working directory)."""

import os
import re
from pathlib import Path

from mae_core.errors import UsageError

# org/name, optionally @revision: the Hub's own rules for the names (letters, digits, '-', '_', '.')
HUB_ID = re.compile(r'^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w./-]+))?$')
# what a model folder needs; the Hub's repositories also hold other frameworks' weights, which are not fetched
PATTERNS = ['config.json', 'preprocessor_config.json', '*.safetensors', '*.bin', '*.index.json']


def is_hub_id(name):
    return not Path(str(name)).exists() and HUB_ID.match(str(name)) is not None and '://' not in str(name)


def _offline():
    return os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in ('1', 'true', 'yes', 'on')


def locate(name):
    """A local path for `name`: the path itself if it exists, else the snapshot folder of the Hub id it spells
    (from the cache, or downloaded when online). UsageError naming the id and what was tried if neither."""
    if not is_hub_id(name):
        return Path(name)
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as error:
        raise UsageError(f'{name} is not a local path; to read it as a Hub id, pip install huggingface_hub') from error
    match = HUB_ID.match(str(name))
    repo, revision = match['repo'], match['revision']
    cache = os.environ.get('HF_HUB_CACHE') or None  # read now, not when huggingface_hub was imported
    where = cache or huggingface_hub.constants.HF_HUB_CACHE
    kwargs = dict(repo_id=repo, revision=revision, cache_dir=cache, allow_patterns=PATTERNS)
    try:
        return Path(huggingface_hub.snapshot_download(**kwargs, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        cached_error = error
    if _offline():
        raise UsageError(
            f'{name}: no such local path, and not in the Hugging Face cache {where} (HF_HUB_OFFLINE is set, so '
            f'nothing was downloaded): {type(cached_error).__name__}'
        )
    try:
        return Path(huggingface_hub.snapshot_download(**kwargs))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        reason = ' '.join(str(error).split())[:200]
        raise UsageError(
            f'{name}: no such local path, not in the Hugging Face cache {where}, and the download failed '
            f'({type(error).__name__}: {reason})'
        ) from error
