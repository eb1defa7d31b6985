"""mae-convert IN OUT: any model this project reads -> a Flax or torch-layout file, with its model description.

    mae-convert runs/tiny mae.pt                                      # a mae-train workdir (latest step) -> torch
    mae-convert runs/tiny vit.safetensors --to torch --encoder_only    # its encoder alone, as a ViT
    mae-convert mae.pt mae.safetensors --heads 8 --decoder_heads 16    # a foreign torch file -> Flax
    mae-convert mae.safetensors mae_again.pt                           # Flax -> torch: the JSON beside says all

IN is a torch-layout `.pt/.pth/.safetensors` (any family; bare, wrapped, DDP-prefixed), a Flax `.safetensors`
written here, or a mae-train workdir (`--step` picks a checkpoint). OUT gets `OUT.json` beside it, the model
description (mae_core.ModelSpec) that mae-reconstruct, mae-parity and --init_from read, so no flags are needed
on anything this project wrote. Every weight goes through the family's converter table, so round trips are
bit-exact. `mae-export --workdir W --out F` is this command under another name.
"""

from pathlib import Path

from mae_core.errors import UsageError
from mae_flax import families
from mae_flax.cli.common import add_model_flags, flag, given_flags, make_parser, run_cli
from mae_flax.files import as_path, is_remote
from mae_flax.model_files import SUFFIXES, read_model, spec_path, write_model

PROG = 'mae-convert'


def build_parser(prog=PROG):
    parser = make_parser(
        prog,
        'Convert a checkpoint or a mae-train workdir to a Flax or torch-layout file, with its model description.',
        'IN: .pt/.pth (torch.load, weights only) or .safetensors, torch layout, a Flax .safetensors written by '
        'mae-convert, or a mae-train workdir. A bare state dict, {"model": ...} / {"state_dict": ...} wrappers '
        'and a DDP "module." prefix are all accepted. Hyperparameters come from IN.json (or the workdir\'s '
        'config.json) if present, then the flags, then the tensor shapes; the summary says which. '
        'Exit codes: 0 converted, 2 bad input.',
    )
    parser.add_argument('input', metavar='IN', help='the checkpoint file or mae-train workdir to convert')
    parser.add_argument('output', metavar='OUT', help='.safetensors (Flax or torch layout) or .pt/.pth (torch)')
    parser.add_argument(
        '--to',
        choices=('flax', 'torch', 'hf'),
        help="OUT's layout: flax, torch (the family's own: vit-pytorch's or facebookresearch/mae's) or hf (a "
        'HuggingFace ViTMAE folder, official family). Default: torch for a .pt/.pth OUT or a workdir IN, otherwise '
        "the other layout than IN's",
    )
    parser.add_argument(*flag('--step'), type=int, help='with a workdir IN: which checkpoint (default: the latest)')
    parser.add_argument(*flag('--encoder_only'), action='store_true', help='write the encoder alone (a ViT)')
    add_model_flags(parser)
    return parser


def output_layout(output, requested, input_layout):
    if requested == 'hf':
        if output.suffix in SUFFIXES:
            raise UsageError(f'a HuggingFace export is a folder (config.json, model.safetensors), got {output}')
        return 'hf'
    if output.suffix not in SUFFIXES:
        raise UsageError(f'OUT must end in .safetensors (Flax or torch layout), .pt or .pth, got {output}')
    if requested == 'flax' and output.suffix != '.safetensors':
        raise UsageError(f'a Flax checkpoint is a .safetensors file, got {output}')
    if requested is not None:
        return requested
    if output.suffix in ('.pt', '.pth') or input_layout == 'workdir':
        return 'torch'
    return 'torch' if input_layout == 'flax' else 'flax'


def summary(loaded, output, layout, encoder_only):
    spec = families.get(loaded.spec.family).encoder_spec(loaded.spec) if encoder_only else loaded.spec
    source = f'{loaded.path} (step {loaded.step})' if loaded.layout == 'workdir' else f'{loaded.path}'
    target = (
        f'{output} (HuggingFace folder)' if layout == 'hf' else f'{output} ({layout} layout) + {spec_path(output).name}'
    )
    lines = [
        f'{source} ({loaded.layout}) -> {target}',
        f'{spec.family} {spec.kind}, {loaded.num_parameters:,} parameters'
        + (", the encoder's written" if encoder_only else ''),
        f'  {"field":<18}{"value":<24}source',
    ]
    values = spec.encoder | (spec.mae or {}) | {'pixel_mean': spec.pixel_mean, 'pixel_std': spec.pixel_std}
    lines += [f'  {field:<18}{value!s:<24}{loaded.sources.get(field, "")}' for field, value in values.items()]
    return '\n'.join(lines)


def convert(argv, prog=PROG):
    args = build_parser(prog).parse_args(argv)
    if is_remote(args.output):
        raise UsageError(f'OUT {args.output}: write the file here, then copy it (IN may be a gs:// workdir, OUT not)')
    input_path = as_path(args.input) if is_remote(args.input) else Path(args.input)  # gs://: not Path('gs:/...')
    output = Path(args.output)
    if not is_remote(input_path) and output.exists() and output.resolve() == input_path.resolve():
        raise UsageError(f'OUT is IN ({output}): write the conversion to another file')
    if output.is_dir():
        raise UsageError(f'OUT {output} is a folder: name the file to write')
    output_layout(output, args.to, None)  # check OUT's name before the (slow) load
    loaded = read_model(input_path, given_flags(args), step=args.step)
    layout = output_layout(output, args.to, loaded.layout)
    write_model(loaded, output, layout, encoder_only=args.encoder_only)
    print(summary(loaded, output, layout, args.encoder_only or loaded.encoder_only))
    return 0


def main(argv=None):
    return convert(argv)


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()
