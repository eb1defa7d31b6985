"""The photographs that ship inside scikit-image (no download): which ones train the default run, which ones are
held out to measure it. The one place that splits them: the embedded photo source (mae_flax.train.data) trains on
TRAINING, the held-out figure (mae_flax.heldout) reads HELDOUT, and no name is in both.
"""

from pathlib import Path

# real photographs (not drawings, masks or charts) of scikit-image's bundled data, colour and gray
PHOTOGRAPHS = (
    'astronaut.png',
    'coffee.png',
    'chelsea.png',
    'rocket.jpg',
    'hubble_deep_field.jpg',
    'ihc.png',
    'retina.jpg',
    'motorcycle_left.png',
    'camera.png',
    'coins.png',
    'moon.png',
    'brick.png',
    'grass.png',
    'gravel.png',
    'clock_motion.png',
    'cell.png',
    'text.png',
    'page.png',
)
# two colour and two gray scenes of everyday things, none a view of another (motorcycle_right.png, the other half
# of motorcycle_left.png's stereo pair, is neither trained on nor held out)
HELDOUT = ('chelsea.png', 'coffee.png', 'camera.png', 'coins.png')
TRAINING = tuple(name for name in PHOTOGRAPHS if name not in HELDOUT)


def folder():
    import skimage  # the training extra's: the commands import this module without it

    return Path(skimage.__file__).parent / 'data'


def path(name):
    return folder() / name
