"""The README's parity check runs, prints both losses for every kind of image, and passes."""

from parity_tests import check
from parity_tests.configs import IMAGE_KINDS


def test_parity_check_passes_and_prints_both_losses(capsys):
    assert check.main() == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0] in IMAGE_KINDS]
    assert [row[0] for row in rows] == list(IMAGE_KINDS)
    for _, torch_loss, flax_loss, _, _, ok in rows:
        assert float(torch_loss) > 0 and float(flax_loss) > 0 and ok == 'yes'
