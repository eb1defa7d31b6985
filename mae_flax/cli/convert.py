"""mae-convert IN OUT: a torch-layout checkpoint (vit-pytorch or mae_torch) <-> a Flax checkpoint, either way.

    mae-convert mae.pt mae.safetensors --heads 8 --decoder_heads 16   # torch -> Flax (+ mae.safetensors.json)
    mae-convert mae.safetensors mae_again.pt                           # Flax -> torch: the JSON holds the config

The Flax checkpoint is one `.safetensors` file keyed by mae_flax parameter paths, in Flax layout, with its
config in `OUT.json` beside it: a single file that loads without torch or pickle, lazily, and that anything
can read with safetensors.numpy (why not orbax: mae_flax.cli.checkpoint). Every weight goes through
mae_flax.convert's table, which checks every key and shape, so torch -> Flax -> torch is bit-exact.
"""

import argparse
from pathlib import Path

from mae_flax.cli.checkpoint import TORCH_SUFFIXES, config_path, load_checkpoint, write_checkpoint
from mae_flax.cli.common import UsageError, add_model_flags, given_flags, run_cli
from mae_flax.cli.infer import MAE_FIELDS, VIT_FIELDS

PROG = 'mae-convert'


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,  # '--dim 8' must not pass for --dim_head
        description='Convert a vit-pytorch / mae_torch checkpoint to a Flax one, or back.',
        epilog=(
            'IN: .pt/.pth (torch.load, weights only) or .safetensors, torch layout, or a Flax .safetensors '
            'written by mae-convert. A bare state dict, {"model": ...} / {"state_dict": ...} wrappers and a '
            'DDP "module." prefix are all accepted. Hyperparameters come from IN.json if present, then the '
            'flags, then the tensor shapes; the summary says which. Exit codes: 0 converted, 2 bad input.'
        ),
    )
    parser.add_argument('input', metavar='IN', help='the checkpoint to convert')
    parser.add_argument('output', metavar='OUT', help='.safetensors (Flax or torch layout) or .pt/.pth (torch)')
    parser.add_argument(
        '--to',
        choices=('flax', 'torch'),
        help="OUT's layout. Default: torch for a .pt/.pth OUT, otherwise the other layout than IN's",
    )
    add_model_flags(parser)
    return parser


def output_layout(output, requested, input_layout):
    if output.suffix not in TORCH_SUFFIXES:
        raise UsageError(f'OUT must end in .safetensors (Flax or torch layout), .pt or .pth, got {output}')
    if requested == 'flax' and output.suffix != '.safetensors':
        raise UsageError(f'a Flax checkpoint is a .safetensors file, got {output}')
    if requested is not None:
        return requested
    if output.suffix in ('.pt', '.pth'):
        return 'torch'
    return 'torch' if input_layout == 'flax' else 'flax'


def summary(checkpoint, output, layout):
    config = checkpoint.config
    fields = [('vit', field) for field in VIT_FIELDS] + [('mae', field) for field in MAE_FIELDS if 'mae' in config]
    lines = [
        f'{checkpoint.path} ({checkpoint.layout} layout) -> {output} ({layout} layout) + {config_path(output).name}',
        f'{config["model"]}, {checkpoint.num_parameters:,} parameters',
        f'  {"field":<18}{"value":<12}source',
    ]
    lines += [f'  {field:<18}{config[part][field]!s:<12}{checkpoint.sources[field]}' for part, field in fields]
    return '\n'.join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    input_path, output = Path(args.input), Path(args.output)
    if output.resolve() == input_path.resolve():
        raise UsageError(f'OUT is IN ({output}): write the conversion to another file')
    output_layout(output, args.to, None)  # check OUT's name before the (slow) load
    checkpoint = load_checkpoint(input_path, given_flags(args))
    layout = output_layout(output, args.to, checkpoint.layout)
    write_checkpoint(checkpoint, output, layout)
    print(summary(checkpoint, output, layout))
    return 0


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()
