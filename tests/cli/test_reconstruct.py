"""mae-reconstruct: the PNG grid, its panels, the same picture from both backends for a seed, and its images read as
mae-train reads them."""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from einops import rearrange
from PIL import Image

from mae_core.errors import UsageError
from mae_flax.cli import reconstruct
from mae_flax.cli.common import read_images
from mae_flax.train import data
from tests.cli.conftest import TINY, TINY_FLAGS, assert_one_line_error, run_command

PATCH, SIZE = 8, 32
SCALE = 4  # mae-reconstruct enlarges 32 px panels to 128 px by default


def panels(path):
    """The PNG as (rows, 4 panels, h, w, 3) int."""
    # drawn enlarged (panels of 128 px and up): every SCALE-th pixel is the model's
    pixels = np.asarray(Image.open(path)).astype(int)[::SCALE, ::SCALE]
    return rearrange(pixels, '(b h) (k w) c -> b k h w c', h=SIZE, w=SIZE)


def patch_grid(image):
    """(h, w, 3) -> (num_patches, patch values), in the models' patch order."""
    return rearrange(image, '(h p1) (w p2) c -> (h w) (p1 p2 c)', p1=PATCH, p2=PATCH)


@pytest.fixture(scope='module')
def grids(flax_checkpoint, wrapped_checkpoint, image_dir, tmp_path_factory):
    """The same images and seed through the Flax checkpoint (flax) and the torch one (torch)."""
    out = tmp_path_factory.mktemp('grids')
    images = [image_dir / 'a.png', image_dir / 'b.png']
    results = {
        'flax': run_command('reconstruct', flax_checkpoint, *images, '--out', out / 'flax.png', '--seed', 3),
        'torch': run_command(
            'reconstruct', wrapped_checkpoint, *images, '--out', out / 'torch.png', '--seed', 3, '--backend', 'torch',
            *TINY_FLAGS,
        ),
    }  # fmt: skip
    return {backend: (result, out / f'{backend}.png') for backend, result in results.items()}


@pytest.mark.parametrize('backend', ['flax', 'torch'])
def test_grid_has_one_row_per_image_and_four_panels(grids, backend):
    result, path = grids[backend]
    assert result.returncode == 0, result.stderr
    # the photo's aspect kept: its centre square, then the model's size
    assert 'centre-cropped to 40x40 and resized' in result.stderr and 'b.png from 48x40 to 32x32' in result.stderr
    with Image.open(path) as image:  # panels enlarged to a size a person can look at: 128 px and up
        assert image.format == 'PNG' and image.size == (4 * SCALE * SIZE, 2 * SCALE * SIZE)
    assert re.search(
        r"masked-patch error / the mean colour fill's: [\d.]+; a blur of the visible patches: [\d.]+", result.stdout
    )


def test_panels_differ_where_they_should(grids):
    original, masked, reconstruction, pasted = panels(grids['flax'][1]).transpose(1, 0, 2, 3, 4)
    num_masked = int(TINY.masking_ratio * TINY.num_patches)
    # the masking noise is numpy's, drawn from the seed: the smallest num_masked values are masked
    noise = np.random.default_rng(3).random((2, TINY.num_patches), dtype=np.float32)
    for row in range(2):
        visible = np.argsort(noise[row])[num_masked:]
        masked_patches = np.argsort(noise[row])[:num_masked]
        np.testing.assert_array_equal(patch_grid(pasted[row])[visible], patch_grid(original[row])[visible])
        np.testing.assert_array_equal(patch_grid(masked[row])[visible], patch_grid(original[row])[visible])
        assert (patch_grid(masked[row])[masked_patches] != patch_grid(original[row])[masked_patches]).any()
        assert (patch_grid(reconstruction[row]) != patch_grid(original[row])).any()
        # the pasted panel shows the predictions where the patches were masked
        np.testing.assert_array_equal(
            patch_grid(pasted[row])[masked_patches], patch_grid(reconstruction[row])[masked_patches]
        )


def test_both_backends_draw_the_same_picture(grids):
    flax_grid, torch_grid = panels(grids['flax'][1]), panels(grids['torch'][1])
    # the predictions differ by float32 rounding (~1e-6 relative), which can flip a pixel's uint8 rounding by a
    # level; a different mask or a wrong weight moves whole patches by tens of levels
    assert np.abs(flax_grid - torch_grid).max() <= 2


def test_a_missing_image_is_one_line(flax_checkpoint, image_dir, tmp_path):
    result = run_command(
        'reconstruct', flax_checkpoint, image_dir / 'a.png', tmp_path / 'nope.png', '--out', tmp_path / 'grid.png'
    )
    assert_one_line_error(result, 'mae-reconstruct')
    assert 'no such image' in result.stderr and 'nope.png' in result.stderr
    assert not (tmp_path / 'grid.png').exists()


@pytest.mark.parametrize(
    ('args', 'message'),
    [(['--out', 'grid.jpg'], '--out must be a .png file'), (['--scale', '0', '--out', 'grid.png'], '--scale')],
)
def test_bad_arguments_are_one_line(flax_checkpoint, image_dir, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reconstruct.run([str(flax_checkpoint), str(image_dir / 'a.png'), *args])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert stderr.startswith('mae-reconstruct: error: ') and message in stderr


def test_vit_only_checkpoint_cannot_reconstruct(vit_checkpoint, image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reconstruct.run([str(vit_checkpoint), str(image_dir / 'a.png'), '--out', str(tmp_path / 'grid.png')])
    assert exit_info.value.code == 2
    assert 'cannot reconstruct' in capsys.readouterr().err


def test_an_output_that_is_an_input_is_refused_by_any_name(flax_checkpoint, image_dir, tmp_path, capsys):
    # the user's photo must not be overwritten, whatever path reaches it
    photo = tmp_path / 'photo.png'
    photo.write_bytes((image_dir / 'a.png').read_bytes())
    (tmp_path / 'link.png').symlink_to(photo)
    for out in (photo, tmp_path / 'link.png', tmp_path / '.' / 'photo.png'):
        with pytest.raises(SystemExit) as exit_info:
            reconstruct.run([str(flax_checkpoint), str(photo), '--out', str(out)])
        assert exit_info.value.code == 2
        assert 'is one of the input images' in capsys.readouterr().err
    assert photo.read_bytes() == (image_dir / 'a.png').read_bytes()


def test_an_output_that_is_a_folder_is_one_line(flax_checkpoint, image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reconstruct.run([str(flax_checkpoint), str(image_dir / 'a.png'), '--out', str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'is a folder: name the .png file to write' in err


# --- reading images: mae-train's reader, and a bad file as one line -------------------------------------------------


def deep_png(path):
    """A 16-bit gray PNG, 32x32, every value above 255: a reader that clips to 8 bits sees a flat white picture."""
    y, x = np.mgrid[:SIZE, :SIZE]
    Image.fromarray((1000 + 60 * x * y).astype(np.uint16)).save(path)
    return path


def test_a_16_bit_png_is_read_as_mae_train_decodes_it(tmp_path):
    path = deep_png(tmp_path / 'deep.png')
    pixels = read_images([path], SIZE, 3, reconstruct.PROG)[0]
    trained_on = np.asarray(data.decode(path.read_bytes(), path, 3, lambda width, height: None)[0]) / np.float32(255)
    np.testing.assert_array_equal(pixels, trained_on)  # the same reader: bitwise
    assert pixels.std() > 0.2  # its contrast (~0.25), not the flat panel 8-bit clipping gave (std 0)


def test_a_16_bit_png_reconstructs_with_its_contrast(flax_checkpoint, tmp_path, capsys):
    path = deep_png(tmp_path / 'deep.png')
    assert reconstruct.main([str(flax_checkpoint), str(path), '--out', str(tmp_path / 'grid.png')]) == 0
    original = panels(tmp_path / 'grid.png')[0, 0]
    assert original.std() > 50  # of 255 levels


def png_claiming(width, height):
    """A valid 32x32 PNG of noise (3 kB) whose header says `width` x `height`: what PIL's decompression-bomb check
    reads."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)).save(buffer, 'PNG')
    content = bytearray(buffer.getvalue())
    content[16:24] = struct.pack('>II', width, height)  # IHDR's width and height, then its CRC
    content[29:33] = struct.pack('>I', zlib.crc32(bytes(content[12:29])))
    return bytes(content)


@pytest.mark.parametrize(
    ('content', 'message'),
    [
        (png_claiming(30000, 30000), 'Image size (900000000 pixels) exceeds limit of 178956970 pixels'),
        (b'', 'the file is empty'),
        (png_claiming(SIZE, SIZE)[:200], 'image file is truncated'),
        (b'just some text\n', 'not an image file'),
    ],
    ids=['decompression-bomb', 'empty', 'truncated', 'not-an-image'],
)
def test_an_image_that_cannot_be_read_is_one_line_and_nothing_is_written(flax_checkpoint, tmp_path, content, message):
    bad = tmp_path / 'bad.png'
    bad.write_bytes(content)
    with pytest.raises(UsageError) as error:
        reconstruct.main([str(flax_checkpoint), str(bad), '--out', str(tmp_path / 'grid.png')])
    text = str(error.value)
    assert '\n' not in text and text.startswith(f'cannot read image {bad}: ') and message in text
    assert not (tmp_path / 'grid.png').exists()
