"""mae-finetune and mae-linprobe: layer-wise lr decay, the frozen encoder, bitwise resume, the torch export's logits,
mixup, drop path, and bad input as one line. Tiny models (8x8 digits, one or two blocks) so that the whole file
takes seconds of compile; the runs are shared through module fixtures."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from flax import nnx, traverse_util
from PIL import Image

from mae_core.errors import UsageError
from mae_core.spec import ModelSpec
from mae_flax import families, model_files
from mae_flax.configs import classify as classify_configs
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.parity import scaled_error, strict_float32
from mae_flax.train import classify, optim, state_checkpoints
from mae_flax.train.classify import export
from mae_flax.train.classify import steps as classify_steps
from mae_flax.train.classify.mixup import mix
from mae_flax.train.classify.task import load_encoder
from mae_flax.train.data import labeled
from mae_flax.train.workdir import load_config
from parity_tests.oracles import vit_pytorch
from tests.train.conftest import REPO, environment

# the exported torch classifier against the Flax one, strict float32: the same tolerance as the parity suite's
# stages (parity_tests/tolerances.py: 1e-5 of the tensor's scale, observed <= 1e-6), plus the BatchNorm folded into
# the head in float64 and cast once (one float32 rounding of the head's weights: ~1e-7 relative)
LOGITS = 1e-5

OFFICIAL = ModelSpec.from_dict(
    dict(
        family='official',
        encoder=dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        mae=dict(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2),
        pixel_mean=(0.3,),
        pixel_std=(0.4,),
    )
)
VIT_PYTORCH = ModelSpec.from_dict(
    dict(
        family='vit_pytorch',
        encoder=dict(image_size=8, patch_size=2, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64, channels=1),
        mae=dict(decoder_dim=16),
    )
)


def smoke(variant='smoke', **changes):
    config = classify_configs.get_config(variant)
    config.update(changes)
    config.compilation_cache = ''
    return config


def per_block(params):
    """{'blocks.1.attn.qkv.kernel': value}: the flat names of a scanned tree's stacked leaves, block by block."""
    flat = {}
    for path, value in traverse_util.flatten_dict(params).items():
        names = tuple(map(str, path))
        if 'stacked' in names:
            at = names.index('stacked')
            for i in range(value.shape[0]):
                flat['.'.join((*names[:at], str(i), *names[at + 1 :]))] = np.asarray(value)[i]
        else:
            flat['.'.join(names)] = np.asarray(value)
    return flat


# --- layer-wise lr decay: every parameter's rate, as a table --------------------------------------------------


@pytest.mark.parametrize('scan_layers', [False, True])
def test_layer_decay_gives_each_parameter_its_layer_s_rate(scan_layers):
    decay = 0.5  # depth 2: embeddings 0.125, block 0 0.25, block 1 0.5, head and final norm 1
    expected = {
        'official': {
            'cls_token': 0.125,
            'pos_embed': 0.125,
            'patch_embed.proj.kernel': 0.125,
            'patch_embed.proj.bias': 0.125,
            **{f'blocks.0.{name}': 0.25 for name in ('norm1.scale', 'attn.qkv.kernel', 'mlp.fc2.bias')},
            **{f'blocks.1.{name}': 0.5 for name in ('norm2.bias', 'attn.proj.kernel', 'mlp.fc1.kernel')},
            'fc_norm.scale': 1.0,
            'fc_norm.bias': 1.0,
            'head.kernel': 1.0,
            'head.bias': 1.0,
        },
        'vit_pytorch': {
            'cls_token': 0.125,
            'pos_embedding': 0.125,
            'to_patch_embedding.linear.kernel': 0.125,
            'to_patch_embedding.patch_norm.scale': 0.125,
            'transformer.layers.0.0.to_qkv.kernel': 0.25,
            'transformer.layers.0.1.out.bias': 0.25,
            'transformer.layers.1.0.norm.scale': 0.5,
            'transformer.layers.1.1.hidden.kernel': 0.5,
            'transformer.norm.scale': 1.0,
            'mlp_head.kernel': 1.0,
            'mlp_head.bias': 1.0,
        },
    }
    for spec in (OFFICIAL, VIT_PYTORCH):
        family = families.get(spec.family)
        pool = family.pools[0] if spec.family == 'official' else 'cls'
        build = functools.partial(family.build_classifier, spec, num_classes=3, pool=pool, scan_layers=scan_layers)
        model = nnx.eval_shape(lambda build=build: build(rngs=nnx.Rngs(0)))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), params)
        scales = per_block(optim.lr_scales(params, family, family.depth(model), decay))
        shapes = per_block(params)
        assert set(scales) == set(shapes)  # every parameter has one
        for name, rate in expected[spec.family].items():
            assert np.all(scales[name] == np.float32(rate)), (spec.family, name, scales[name])
        # and nothing else has a rate outside the layers' (a rule that missed a part would give it depth + 1)
        assert {float(np.unique(value)[0]) for value in scales.values()} == {0.125, 0.25, 0.5, 1.0}


def test_layer_decay_scales_the_adamw_update():
    """With one parameter group per layer, torch's AdamW multiplies the whole update (adam step and decoupled weight
    decay) by the group's lr scale: so does the chain here."""
    config = smoke()
    config.optim.update(layer_decay=0.5, weight_decay=0.1)
    family = families.get('official')
    model = nnx.eval_shape(lambda: family.build_classifier(OFFICIAL, num_classes=3, pool='avg', rngs=nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree.map(lambda leaf: np.linspace(-1, 1, leaf.size, dtype=np.float32).reshape(leaf.shape), shapes)
    grads = jax.tree.map(lambda p: np.full_like(p, 0.3), params)
    with_decay, _ = optim.make_classifier_optimizer(config, params, family, 2)
    config.optim.layer_decay = 1.0
    without, _ = optim.make_classifier_optimizer(config, params, family, 2)
    step = per_block(jax.jit(with_decay.update)(grads, with_decay.init(params), params)[0])
    plain = per_block(jax.jit(without.update)(grads, without.init(params), params)[0])
    scales = per_block(optim.lr_scales(params, family, 2, 0.5))
    for name in step:
        np.testing.assert_allclose(step[name], plain[name] * scales[name], rtol=1e-6, err_msg=name)


# --- the runs ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def finetune_runs(tmp_path_factory):
    """8 steps straight (checkpoints at 4 and 8); the same run stopped after its step-4 checkpoint (a copy without
    the step-8 one, and without the metrics and export written after it), then resumed by the same command."""
    import shutil

    root = tmp_path_factory.mktemp('finetune')
    config = smoke(compilation_cache=str(root / 'cache'))  # the resumed run loads the first one's compiled step
    straight = classify.train(config, root / 'straight')
    shutil.copytree(root / 'straight', root / 'resumed')
    shutil.rmtree(root / 'resumed/checkpoints/8')
    for name in ('metrics.jsonl', 'best.safetensors', 'best.safetensors.json'):
        (root / 'resumed' / name).unlink()
    resumed = classify.train(config, root / 'resumed')
    return root, straight, resumed


def restored_state(workdir):
    import orbax.checkpoint as ocp

    manager = state_checkpoints.make_manager(workdir / 'checkpoints', load_config(workdir).checkpoint)
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    return manager.restore(manager.latest_step(), args=args)['state']


def test_a_resumed_fine_tuning_run_is_bitwise_the_uninterrupted_one(finetune_runs):
    root, straight, resumed = finetune_runs
    assert straight['step'] == resumed['step'] == 8 and resumed['steps_run'] == 4
    a, b = restored_state(root / 'straight'), restored_state(root / 'resumed')
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
    # the metrics of the resumed half are the straight run's
    records = {json.loads(line)['step']: json.loads(line) for line in (root / 'straight/metrics.jsonl').open()}
    again = {json.loads(line)['step']: json.loads(line) for line in (root / 'resumed/metrics.jsonl').open()}
    assert records[8]['loss'] == again[8]['loss'] and records[8]['val_top1'] == again[8]['val_top1']


def test_fine_tuning_learns_evaluates_and_exports_the_best(finetune_runs):
    root, straight, _ = finetune_runs
    records = [json.loads(line) for line in (root / 'straight/metrics.jsonl').open()]
    evals = [r for r in records if 'val_top1' in r]
    assert [r['step'] for r in evals] == [4, 8] and all(0 <= r['val_top1'] <= 100 for r in evals)
    described = json.loads((root / 'straight/best.safetensors.json').read_text())
    assert described['val_top1'] == straight['best_top1'] == max(r['val_top1'] for r in evals)
    assert described['classifier']['num_classes'] == 10 and described['classifier']['pool'] == 'avg'
    # what timm's VisionTransformer(global_pool='avg') holds: fc_norm, no norm, a head
    keys = set(safetensors.numpy.load_file(root / 'straight/best.safetensors'))
    assert {'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'fc_norm.weight', 'head.weight'} <= keys
    assert 'norm.weight' not in keys
    assert (root / 'straight/curves.png').is_file()


@pytest.fixture(scope='module')
def probe_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('probe') / 'run'
    return workdir, classify.train(smoke('smoke_linprobe'), workdir)


def test_the_linear_probe_never_changes_the_encoder(probe_run, tmp_path):
    """Bitwise: every parameter but the head's is the initial one after training; the optimizer holds state for the
    head alone; the BatchNorm's running statistics moved."""
    config = smoke('smoke_linprobe')
    workdir, summary = probe_run
    assert summary['step'] == 8
    final = restored_state(workdir)
    task = classify.Classification(config, tmp_path / 'fresh')
    task.data(0, 1)
    # jitted as the run's: XLA may fuse an initialiser's scaling differently from eager execution
    initial = jax.jit(lambda: classify_steps.init_state(task.config, task.spec, task.num_classes, optax_identity()))()
    before, after = per_block(initial['params']), per_block(final['params'])
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert changed == {'head.kernel', 'head.bias'}
    # the optimizer's state: LARS's momentum for the head's two arrays, nothing for the encoder (a step count)
    held = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_flatten_with_path(final['opt_state'])[0]]
    assert sorted(name.split("'head']")[-1] for name in held if 'head' in name) == ["['bias']", "['kernel']"]
    assert not [name for name in held if 'head' not in name and 'count' not in name]
    assert not np.array_equal(final['batch_stats']['head_norm']['mean'], initial['batch_stats']['head_norm']['mean'])


def optax_identity():
    import optax

    return optax.identity()


def test_fsdp_over_8_devices_matches_one_device(finetune_runs, probe_run, mesh_runs):
    """4 x 2 (data x fsdp, every parameter sharded), batch statistics over the sharded batch: the same losses as one
    device within tests/train/test_sharding.py's tolerance (float32 sums in another order)."""
    from tests.train.conftest import losses
    from tests.train.test_sharding import RTOL, trajectory

    for one_device, variant in ((finetune_runs[0] / 'straight', 'smoke'), (probe_run[0], 'smoke_linprobe')):
        expected = trajectory(losses(one_device))
        assert len(expected) == 4
        np.testing.assert_allclose(trajectory(mesh_runs[variant]), expected, rtol=RTOL, err_msg=variant)


# --- the export: the torch classifier gives the Flax one's logits ------------------------------------------------


def random_classifier(spec, pool, head_norm, scan_layers=False):
    family = families.get(spec.family)
    model = family.build_classifier(
        spec, num_classes=5, pool=pool, head_norm=head_norm, head_std=0.5, scan_layers=scan_layers, rngs=nnx.Rngs(3)
    )
    if head_norm:  # running statistics as training leaves them
        model.head_norm.mean.set_value(jnp.linspace(-1, 1, model.head_norm.mean.shape[0]))
        model.head_norm.var.set_value(jnp.linspace(0.5, 2, model.head_norm.var.shape[0]))
    model.eval()
    return model


CASES = [
    (OFFICIAL, 'avg', False, False),  # fine-tuning: fc_norm of the mean patch token
    (OFFICIAL, 'token', True, True),  # linear probing: the cls token, BatchNorm folded into the head; scanned
    (VIT_PYTORCH, 'cls', False, True),
    (VIT_PYTORCH, 'cls', True, False),
]


@pytest.mark.parametrize(('spec', 'pool', 'head_norm', 'scan_layers'), CASES)
def test_the_exported_torch_classifier_gives_the_same_logits(spec, pool, head_norm, scan_layers):
    model = random_classifier(spec, pool, head_norm, scan_layers)
    images = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    twin = families.get(spec.family).build_classifier_torch(spec, num_classes=5, pool=pool)
    state_dict = {key: torch.from_numpy(value) for key, value in export.torch_state_dict(model).items()}
    twin.load_state_dict(state_dict, strict=True)
    with strict_float32(), torch.no_grad():
        expected = twin.eval()(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        actual = np.asarray(model(jnp.asarray(images)))
    assert np.abs(expected).max() > 0.1  # a head of zeros would hide everything
    assert scaled_error(expected, actual) <= LOGITS


def test_vit_pytorch_itself_loads_the_export_and_agrees():
    lucidrains = vit_pytorch()
    model = random_classifier(VIT_PYTORCH, 'cls', True)
    keywords = {key: value for key, value in VIT_PYTORCH.encoder.items() if key != 'layer_norm_eps'}
    reference = lucidrains.vit.ViT(**(keywords | {'num_classes': 5}))
    reference.load_state_dict(
        {key: torch.from_numpy(value) for key, value in export.torch_state_dict(model).items()}, strict=True
    )
    images = np.random.default_rng(1).standard_normal((3, 8, 8, 1)).astype(np.float32)
    with strict_float32(), torch.no_grad():
        expected = reference.eval()(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        actual = np.asarray(model(jnp.asarray(images)))
    assert scaled_error(expected, actual) <= LOGITS


def test_best_safetensors_loads_into_the_torch_twin_with_the_run_s_accuracy(finetune_runs):
    root, straight, _ = finetune_runs
    with pytest.raises(UsageError, match='is a classifier exported by mae-finetune'):  # not an MAE: mae-convert says
        model_files.read_model(root / 'straight/best.safetensors')
    twin = classify.torch_classifier(root / 'straight/best.safetensors')
    data = labeled.digits(1, 0.2)
    images = np.stack([np.asarray(data.val.images[i]) for i in range(len(data.val.labels))])[..., None]
    spec = ModelSpec.from_dict(json.loads((root / 'straight/best.safetensors.json').read_text())['model'])
    inputs = torch.from_numpy(spec.normalize(images / 255)).permute(0, 3, 1, 2)
    with torch.no_grad():
        accuracy = 100 * float((twin(inputs).argmax(-1).numpy() == data.val.labels).mean())
    assert abs(accuracy - straight['best_top1']) < 1e-6


def test_a_published_encoder_file_without_head_counts_takes_them_from_the_config(tmp_path):
    """facebookresearch/mae's mae_pretrain_vit_*.pth hold {'model': encoder weights} and no head counts: the config's
    model gives them (its ImageNet variants carry facebookresearch/mae's), the shapes give the rest."""
    mae = families.build(OFFICIAL, rngs=nnx.Rngs(0))
    encoder = {key: torch.from_numpy(value) for key, value in to_torch_state_dict(mae, encoder_only=True).items()}
    torch.save({'model': encoder}, tmp_path / 'mae_pretrain_vit_tiny.pth')
    config = smoke()
    config.model = OFFICIAL.to_dict()
    task = classify.Classification(config, tmp_path / 'run', init_from=tmp_path / 'mae_pretrain_vit_tiny.pth')
    assert task.spec.encoder == OFFICIAL.encoder
    classifier = families.get('official').build_classifier(task.spec, num_classes=3, pool='token', rngs=nnx.Rngs(1))
    load_encoder(classifier, task.arrays, 'the file')
    np.testing.assert_array_equal(classifier.blocks[1].attn.qkv.kernel[...], mae.blocks[1].attn.qkv.kernel[...])
    np.testing.assert_array_equal(classifier.norm.scale[...], mae.norm.scale[...])


@pytest.mark.parametrize('spec', [OFFICIAL, VIT_PYTORCH], ids=['official', 'vit_pytorch'])
def test_fine_tuning_at_twice_the_resolution_resamples_the_positions(spec, tmp_path):
    """config.classifier.image_size 16 on an 8px encoder: the 4x4 grid of positions becomes 8x8 by bicubic resampling
    (facebookresearch/mae's interpolate_pos_embed; the cls row kept), everything else loads as it is."""
    from mae_core.resample import resample_grid

    family = families.get(spec.family)
    mae = families.build(spec, rngs=nnx.Rngs(0))
    arrays = to_torch_state_dict(mae, encoder_only=True)
    path = tmp_path / 'encoder.safetensors'
    safetensors.numpy.save_file(arrays, path)
    (tmp_path / 'encoder.safetensors.json').write_text(family.encoder_spec(spec).to_json())
    config = smoke()
    config.classifier.image_size = 16
    task = classify.Classification(config, tmp_path / 'run', init_from=path)
    assert task.spec.image_size == (16, 16) and task.spec.patch_size == (2, 2)
    pool = 'avg' if spec.family == 'official' else 'cls'
    classifier = family.build_classifier(task.spec, num_classes=3, pool=pool, rngs=nnx.Rngs(1))
    with pytest.warns(UserWarning, match='4x4 grid of positions, the model has 8x8: resampled bicubically'):
        load_encoder(classifier, task.arrays, 'the file')
    if spec.family == 'official':
        table, loaded = arrays['pos_embed'][0], np.asarray(classifier.pos_embed[...])[0]
    else:
        table, loaded = arrays['pos_embedding'], np.asarray(classifier.pos_embedding[...])
    np.testing.assert_array_equal(loaded[0], table[0])  # the cls row
    np.testing.assert_allclose(
        loaded[1:], resample_grid(table[1:].reshape(4, 4, -1), (8, 8)).reshape(64, -1), rtol=1e-6
    )
    assert classifier(jnp.zeros((2, 16, 16, 1))).shape == (2, 3)


# --- mixup and drop path --------------------------------------------------------------------------------------


def test_mixup_and_cutmix_mix_images_and_targets_alike():
    images = jnp.stack([jnp.full((8, 8, 1), float(k)) for k in range(4)])  # image k is all k
    targets = jax.nn.one_hot(jnp.arange(4), 4)
    config = smoke().mixup
    for mode in ({'mixup_alpha': 1.0, 'cutmix_alpha': 0.0}, {'mixup_alpha': 0.0, 'cutmix_alpha': 1.0}):
        config.update(mode)
        for seed in range(4):
            mixed, mixed_targets = mix(jax.random.key(seed), images, targets, config)
            lam = float(mixed_targets[0, 0])
            assert np.allclose(mixed_targets.sum(-1), 1) and np.isclose(float(mixed_targets[0, 3]), 1 - lam)
            # image 0 mixed with image 3 (the reverse): its mean is 3 * (1 - lam) in both modes
            assert np.isclose(float(mixed[0].mean()), 3 * (1 - lam), atol=1e-5)
            if mode['cutmix_alpha']:
                assert set(np.unique(np.asarray(mixed[0]))) <= {0.0, 3.0}


def test_drop_path_is_per_sample_and_off_in_evaluation():
    spec = OFFICIAL
    family = families.get(spec.family)
    loop = family.build_classifier(spec, num_classes=3, pool='avg', drop_path_rate=0.5, rngs=nnx.Rngs(0, dropout=1))
    scanned = family.build_classifier(
        spec, num_classes=3, pool='avg', drop_path_rate=0.5, scan_layers=True, rngs=nnx.Rngs(0, dropout=1)
    )
    assert float(loop.blocks[1].drop_path.rate[...]) == 0.5 and float(loop.blocks[0].drop_path.rate[...]) == 0.0
    images = jnp.asarray(np.random.default_rng(0).standard_normal((16, 8, 8, 1)), jnp.float32)
    first, second = loop.features(images), loop.features(images)
    assert not np.allclose(first, second)  # new masks each call
    loop.eval()
    scanned.eval()
    load_torch_state_dict(scanned, to_torch_state_dict(loop))  # the same weights (and rates) scanned or not:
    # the same function in evaluation
    np.testing.assert_allclose(loop.features(images), scanned.features(images), rtol=1e-5, atol=1e-6)


# --- bad input: one line each ------------------------------------------------------------------------------------


def one_line(error):
    message = str(error.value)
    assert '\n' not in message
    return message


def test_labels_out_of_range_are_one_line(tmp_path):
    images = np.zeros((6, 8, 8, 1), np.uint8)
    np.savez(tmp_path / 'bad.npz', images=images, labels=np.array([0, 1, 2, 3, 4, 5]))
    config = smoke(total_steps=1)
    config.data.source = str(tmp_path / 'bad.npz')
    config.classifier.num_classes = 4
    task = classify.Classification(config, tmp_path / 'run')
    with pytest.raises(UsageError) as error:
        task.data(0, 1)
    assert 'labels must be in 0..3, found 0..5' in one_line(error)
    np.savez(tmp_path / 'negative.npz', images=images, labels=np.array([0, 1, -1, 0, 1, 0]))
    with pytest.raises(UsageError) as error:
        labeled.npz(tmp_path / 'negative.npz', 1, 0.2)
    assert 'labels must be in >= 0, found -1..1' in one_line(error)


def test_an_image_folder_with_an_empty_class_is_one_line(tmp_path):
    for split, name in (('train', 'cat'), ('val', 'cat'), ('train', 'dog')):
        (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
    for split in ('train', 'val'):
        Image.new('L', (8, 8)).save(tmp_path / split / 'cat' / 'a.png')
    with pytest.raises(UsageError) as error:
        labeled.image_folder(tmp_path, 1)
    assert "class 'dog' has no images" in one_line(error)
    Image.new('L', (8, 8)).save(tmp_path / 'train' / 'dog' / 'b.png')
    found = labeled.image_folder(tmp_path, 1)
    assert found.classes == ('cat', 'dog') and list(found.train.labels) == [0, 1]


def test_a_checkpoint_without_an_encoder_is_one_line(tmp_path):
    safetensors.numpy.save_file({'decoder_pred.weight': np.zeros((4, 4), np.float32)}, tmp_path / 'x.safetensors')
    with pytest.raises(UsageError) as error:
        classify.Classification(smoke(), tmp_path / 'run', init_from=tmp_path / 'x.safetensors')
    assert 'not a state dict of any known model family' in one_line(error)


# --- the commands, as a user runs them ---------------------------------------------------------------------------


def test_mae_linprobe_on_a_mae_train_workdir(smoke_run, tmp_path):
    """The user's path as a process: the session's mae-train smoke run (the vit-pytorch family, 16px RGB) probed by
    the command on a .npz of labelled images (`python -m mae_flax.train.classify_main linprobe`, as mae-linprobe)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / 'labelled.npz', images=rng.integers(0, 256, (48, 16, 16, 3), np.uint8), labels=np.arange(48) % 3
    )
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'mae_flax.train.classify_main',
            'linprobe',
            '--workdir',
            str(tmp_path / 'probe'),
            '--init-from',
            str(smoke_run[0]),
            f'--config={REPO}/mae_flax/configs/classify.py:smoke_linprobe',
            f'--config.data.source={tmp_path / "labelled.npz"}',
        ],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'top-1' in result.stdout and (tmp_path / 'probe/best.safetensors').is_file()
    config = json.loads((tmp_path / 'probe/config.json').read_text())
    assert (
        config['mode'] == 'linprobe'
        and config['model'] == json.loads((smoke_run[0] / 'config.json').read_text())['model']
    )
    exported = safetensors.numpy.load_file(tmp_path / 'probe/best.safetensors')
    assert exported['mlp_head.weight'].shape == (3, 32)  # vit-pytorch's ViT keys, 3 classes from the labels
