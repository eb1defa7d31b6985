"""`mae-finetune` and `mae-linprobe`: an MAE encoder as a classifier, fine-tuned or linearly probed.

    mae-finetune --workdir=runs/digits_ft --init_from=runs/digits_mae      # the embedded digits, after mae-train
    mae-linprobe --workdir=runs/digits_lp --init_from=mae_pretrain_vit_base.pth \
        --config=mae_flax/configs/classify.py:vit_b16_linprobe --config.data.source=/data/imagenet

Rerunning the same command resumes. Everything else is mae-train's (multi-process flags, SIGTERM, exit codes).
"""

import sys
from pathlib import Path

from mae_core.errors import UsageError
from mae_flax.train import main

try:
    import mae_flax.configs
    from mae_flax.configs import classify as classify_configs
    from mae_flax.train import classify
except ImportError as missing:
    raise SystemExit(f'this command needs the training extra: pip install "twin-mae[train]" ({missing})') from missing

CONFIG_FILE = str(Path(mae_flax.configs.__file__).parent / 'classify.py')
INIT_FROM_HELP = (
    'The encoder: a mae-train workdir, or a checkpoint mae-convert reads (.pt/.pth/.safetensors, a HuggingFace '
    'folder); without it, a random initialisation'
)


def _train(mode):
    def train(config, workdir, init_from, wait):
        if config.get('mode') != mode:
            raise UsageError(
                f'{classify.COMMANDS[mode]} runs config.mode={mode!r}, the config says {config.get("mode")!r}: use '
                f'{classify.COMMANDS.get(config.get("mode"), "the other command")} or a {mode} variant'
            )
        return classify.train(config, workdir, init_from=init_from, wait=wait)

    return train


FINETUNE = main.Command(
    'mae-finetune',
    __doc__,
    CONFIG_FILE + ':digits',
    tuple(v for v in classify_configs.VARIANTS if not v.endswith('_linprobe')),
    _train('finetune'),
    INIT_FROM_HELP,
    (
        'mae-finetune --workdir=runs/ft --init_from=runs/digits_mae --config.optim.layer_decay=0.65',
        'mae-finetune --workdir=runs/ft_b16 --config=mae_flax/configs/classify.py:vit_b16 --init_from=mae.pth '
        '--config.data.source=/data/imagenet',
        'mae-finetune --workdir=runs/vft --config=mae_flax/configs/classify.py:video_motion --init_from=runs/video',
    ),
)
LINPROBE = main.Command(
    'mae-linprobe',
    __doc__,
    CONFIG_FILE + ':digits_linprobe',
    tuple(v for v in classify_configs.VARIANTS if v.endswith('_linprobe')),
    _train('linprobe'),
    INIT_FROM_HELP,
    ('mae-linprobe --workdir=runs/lp --init_from=runs/digits_mae --config.batch_size=512',),
)


def run_finetune():
    main.run(FINETUNE)


def run_linprobe():
    main.run(LINPROBE)


if __name__ == '__main__':  # python -m mae_flax.train.classify_main finetune|linprobe [flags]
    if len(sys.argv) < 2 or sys.argv[1] not in ('finetune', 'linprobe'):
        raise SystemExit('usage: python -m mae_flax.train.classify_main finetune|linprobe [flags]')
    command = sys.argv.pop(1)
    run_finetune() if command == 'finetune' else run_linprobe()
