"""mae-export --workdir W --out F: `mae-convert W F` under the name mae-train users look for.

mae-export --workdir runs/tiny --out mae.pt                  # the latest checkpoint, torch layout + mae.pt.json
mae-export --workdir runs/tiny --out vit.safetensors --encoder_only --step 300
"""

from mae_flax.cli.common import flag, make_parser, run_cli
from mae_flax.cli.convert import convert

PROG = 'mae-export'


def main(argv=None):
    parser = make_parser(
        PROG,
        'Write a mae-train checkpoint as a torch state dict (vit-pytorch / mae_torch keys) with its model description.',
        'The same as `mae-convert WORKDIR OUT`; see mae-convert --help. Exit codes: 0 written, 2 bad input.',
    )
    parser.add_argument(*flag('--workdir'), required=True, help='a mae-train workdir')
    parser.add_argument(*flag('--out'), required=True, help='the file to write: .pt, .pth or .safetensors')
    parser.add_argument(*flag('--step'), type=int, help='which checkpoint (default: the latest)')
    parser.add_argument(*flag('--encoder_only'), action='store_true', help='write the encoder alone (a ViT)')
    args = parser.parse_args(argv)
    forwarded = [args.workdir, args.out, '--to', 'torch']
    forwarded += ['--step', str(args.step)] if args.step is not None else []
    forwarded += ['--encoder_only'] if args.encoder_only else []
    return convert(forwarded, prog=PROG)


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()
