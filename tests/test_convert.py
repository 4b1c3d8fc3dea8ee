"""Published PyTorch CIFAR teachers in (`python -m cud_jax.convert from-torch`).

Every zoo model is built with the PyTorch peer's own definitions
(`../shared/peer/mdistiller/models_cifar`, imported from its path: an instrument, not part
of the project), given random weights and random BatchNorm statistics, saved with
`torch.save` in the published layout (`{"model": state_dict, "epoch": 240}`), read back by
our torch-free reader and compared in eval mode, logits to 1e-4. Skips without torch or the
peer folder.
"""

import os
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cud_jax import convert, models
from cud_jax.interop import cifar, torch_pickle

torch = pytest.importorskip("torch")

PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                    "shared", "peer", "mdistiller")
# Our names -> the peer's `cifar_model_dict` names where they differ.
PEER_NAMES = {"mobilenetv2": "MobileNetV2", "shufflenetv1": "ShuffleV1",
              "shufflenetv2": "ShuffleV2"}


@pytest.fixture(scope="module")
def peer():
    if not os.path.isdir(os.path.join(PEER, "models_cifar")):
        pytest.skip("the PyTorch peer (../shared/peer/mdistiller) is not here")
    sys.path.insert(0, PEER)
    try:
        import models_cifar  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(PEER)
    torch.set_num_threads(1)
    return models_cifar


def _torch_model(peer, name, num_classes, seed=0):
    """The peer's model with random weights AND random BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = peer.cifar_model_dict[PEER_NAMES.get(name, name)][0](num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and \
                    module.bias is not None:
                module.bias.normal_(0.0, 0.1)  # the zoo initialises some biases to zero
    return model.eval()


def _torch_logits(model, images_nhwc):
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))))
    return (out[0] if isinstance(out, tuple) else out).numpy()  # the peer returns (logits, feats)


def _save(path, model, **extra):
    torch.save({"model": model.state_dict(), **extra}, str(path))
    return str(path)


@jax.jit(static_argnums=0)
def _forward(graphdef, state, images):
    return nnx.merge(graphdef, state)(images)


def _our_logits(model, images, *, eager=False):
    if eager:  # ResNets repeat a few layer shapes: eager reuses ops compiled for earlier tests
        return np.asarray(model(jnp.asarray(images)))
    graphdef, state = nnx.split(model)
    return np.asarray(_forward(graphdef, state, jnp.asarray(images)))


IMAGES = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_model_from_pytorch_gives_the_same_logits(peer, name, tmp_path):
    reference = _torch_model(peer, name, num_classes=10)
    path = _save(tmp_path / "ckpt_epoch_240.pth", reference, epoch=240)
    state = convert.state_dict_of(torch_pickle.load(path), path)
    model, arch = cifar.model_from_state_dict(state, name)
    assert arch == name
    ours = _our_logits(model, IMAGES, eager=name.startswith(("resnet", "wrn")))
    np.testing.assert_allclose(ours, _torch_logits(reference, IMAGES), rtol=1e-4, atol=1e-4)


def test_cli_checkpoint_is_what_the_trainer_loads(peer, tmp_path, capsys):
    """from-torch -> `--config.teacher.checkpoint` -> the trainer's own loader: the same
    logits on the task's preprocessed images, a bare state dict, the architecture detected."""
    from cud_jax import pipeline  # pylint: disable=import-outside-toplevel
    from cud_jax.configs import base_config  # pylint: disable=import-outside-toplevel
    from cud_jax.parallel import sharding  # pylint: disable=import-outside-toplevel
    from cud_jax.train import tasks  # pylint: disable=import-outside-toplevel

    config = base_config()
    config.data.name = "synthetic"
    config.data.val_size = 20
    config.data.source_kwargs = dict(num_classes=6, num_superclasses=2, train_per_class=10,
                                     test_per_class=4)
    config.teacher.model = "resnet8"
    config.teacher.batch_size = 8
    reference = _torch_model(peer, "resnet8", num_classes=6)
    pth = tmp_path / "bare.pth"
    torch.save(reference.state_dict(), str(pth))  # a bare state dict, no "model" wrapper
    out = str(tmp_path / "teacher")
    assert convert.main(["from-torch", str(pth), f"--out={out}"]) == 0
    assert "--config.teacher.model=resnet8" in capsys.readouterr().out
    config.teacher.checkpoint = out
    mesh = sharding.make_mesh()
    data = pipeline.place_data(config, tasks.build_task(config.data), mesh)
    trained = pipeline.load_trained("teacher", config, str(tmp_path / "run"), data, mesh)
    images = np.asarray(data.task.preprocess(data.test.inputs[:4]))
    ours, _ = trained.model_def.apply(trained.params, trained.model_state,
                                      jnp.asarray(images), train=False)
    np.testing.assert_allclose(np.asarray(ours), _torch_logits(reference, images),
                               rtol=1e-4, atol=1e-4)
    # Another architecture is refused, even where its arrays are a subset of the checkpoint's.
    config.teacher.model = "resnet8x4"
    with pytest.raises(ValueError, match="does not fit the configured model"):
        pipeline.load_trained("teacher", config, str(tmp_path / "run"), data, mesh)


def test_legacy_format_and_dataparallel_names(peer, tmp_path):
    """Pre-1.6 PyTorch files (not zip) and `module.`-prefixed names read the same."""
    reference = _torch_model(peer, "wrn_16_1", num_classes=5)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "old.pth"
    torch.save({"model": state, "epoch": 240}, str(path), _use_new_zipfile_serialization=False)
    model, _ = cifar.model_from_state_dict(torch_pickle.load(path)["model"], "wrn_16_1")
    np.testing.assert_allclose(_our_logits(model, IMAGES), _torch_logits(reference, IMAGES),
                               rtol=1e-4, atol=1e-4)


def test_reader_matches_torch_for_dtypes_views_and_extras(tmp_path):
    base = torch.randn(4, 6)
    tensors = {"float": torch.randn(3, 4), "transposed": base.t(), "slice": base[1:3, 2:],
               "half": torch.randn(5).half(), "bfloat16": torch.randn(3).bfloat16(),
               "long": torch.arange(7), "scalar": torch.tensor(2.5), "bool": torch.rand(4) > 0.5}
    extras = {"epoch": 240, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}},
                                          "param_groups": [{"lr": 0.1, "params": [0]}]}}
    for legacy in (False, True):
        path = tmp_path / f"t{legacy}.pth"
        torch.save({"model": tensors, **extras}, str(path),
                   _use_new_zipfile_serialization=not legacy)
        loaded = torch_pickle.load(path)
        for name, tensor in tensors.items():
            want = tensor.float().numpy() if name == "bfloat16" else tensor.numpy()
            got = loaded["model"][name]
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(np.asarray(got, want.dtype), want, err_msg=name)
        assert loaded["epoch"] == 240 and loaded["optimizer"]["param_groups"][0]["lr"] == 0.1
        truncated = tmp_path / f"cut{legacy}.pth"
        truncated.write_bytes(path.read_bytes()[:300])
        with pytest.raises(pickle.UnpicklingError, match=f"{truncated} is not a readable"):
            torch_pickle.load(truncated)


class _Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would contain."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_code_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "x": _Payload(marker)}, str(path))
    with pytest.raises(torch_pickle.UnsafeCheckpointError, match="refusing to load"):
        torch_pickle.load(path)
    assert not marker.exists()
    assert convert.main(["from-torch", str(path), f"--out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refusing" in err and len(err.splitlines()) == 1
    assert not marker.exists()


def test_errors_name_the_problem(peer, tmp_path):
    reference = _torch_model(peer, "resnet8", num_classes=10)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    with pytest.raises(ValueError, match="3 residual blocks .* has 9; is --arch right"):
        cifar.model_from_state_dict(state, "resnet20")
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\) resnet8 needs, e.g. \['fc.bias'\]"):
        cifar.model_from_state_dict({k: v for k, v in state.items() if k != "fc.bias"},
                                    "resnet8")
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(10, 64\), resnet8 \(100, 64\)"):
        cifar.model_from_state_dict(state, "resnet8", num_classes=100)
    with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
        cifar.model_from_state_dict(state, "resnet9")
    with pytest.raises(ValueError, match="no model of the zoo matches"):
        cifar.model_from_state_dict({**state, "extra.weight": np.zeros(1)})
    out = tmp_path / "taken"
    out.mkdir()
    (out / "file").write_text("x")
    path = _save(tmp_path / "r8.pth", reference)
    with pytest.raises(FileExistsError, match="not empty"):
        convert.import_torch(path, str(out))
