"""Tests of the vision data sources and load_vision (cud_jax.data).

Official CIFAR archives are written here in tmp_path in both official formats, so the
readers are checked byte for byte without the real 170 MB files. Real files from the shared
data folder (`<repo>/../shared/data`, or $CUD_JAX_SHARED_DATA) are used when present and the
tests that need them skip otherwise. The full decode of the real CIFAR-10 JPEG tarball
(60,000 images, 10-15 s on one idle core, far more on a busy one) runs only with
CUD_JAX_SLOW_TESTS=1; by default a quick test reads the first files of each class.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from cud_jax import data
from cud_jax.data import _sources, vision

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def shared_data_dir() -> Path:
    env = os.environ.get("CUD_JAX_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


CIFAR10_JPEG = shared_data_dir() / "cifar10_jpeg" / "cifar10-jpeg.tar.gz"
CIFAR100_SAMPLES = shared_data_dir() / "cifar100_samples"
needs_cifar10_jpeg = pytest.mark.skipif(not CIFAR10_JPEG.is_file(),
                                        reason=f"{CIFAR10_JPEG} not present")
needs_cifar100_samples = pytest.mark.skipif(not CIFAR100_SAMPLES.is_dir(),
                                            reason=f"{CIFAR100_SAMPLES} not present")


# --- Writers of the official CIFAR formats ------------------------------------------------------

def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def official_rows(images: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] -> [N, 3072]: red plane, green plane, blue plane, each row by row."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def py2_pickle(obj) -> bytes:
    """Like the official files: protocol 2, bytes keys, arrays under `numpy.core` (numpy 1)."""
    blob = pickle.dumps(obj, protocol=2)
    return blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_files(root: Path, folder: str, files: dict[str, bytes], archive: str | None) -> Path:
    """Writes files into root/folder, or into a root/archive tar.gz with that folder inside."""
    if archive is None:
        (root / folder).mkdir(parents=True)
        for name, blob in files.items():
            (root / folder / name).write_bytes(blob)
        return root / folder
    with tarfile.open(root / archive, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return root / archive


def make_cifar10(root: Path, fmt: str, packed: bool, train_per_batch=2, n_test=3, seed=0):
    """Writes a tiny CIFAR-10 (5 train batches + test) in the official `fmt`; returns truth."""
    names = [f"class{i}" for i in range(10)]
    rng = np.random.default_rng(seed)
    batches = [(random_images(train_per_batch, seed + 1 + b),
                rng.integers(0, 10, train_per_batch)) for b in range(5)]
    test = (random_images(n_test, seed + 100), rng.integers(0, 10, n_test))
    files = {}
    if fmt == "python":
        for b, (x, y) in enumerate(batches):
            files[f"data_batch_{b + 1}"] = py2_pickle({
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [int(v) for v in y], b"data": official_rows(x),
                b"filenames": [f"f{i}.png".encode() for i in range(len(y))]})
        files["test_batch"] = py2_pickle({b"labels": [int(v) for v in test[1]],
                                          b"data": official_rows(test[0])})
        files["batches.meta"] = py2_pickle({b"label_names": [n.encode() for n in names],
                                            b"num_cases_per_batch": 10000, b"num_vis": 3072})
        folder, archive = "cifar-10-batches-py", "cifar-10-python.tar.gz"
    else:
        def records(x, y):
            return np.concatenate([y.astype(np.uint8)[:, None], official_rows(x)], 1).tobytes()
        for b, (x, y) in enumerate(batches):
            files[f"data_batch_{b + 1}.bin"] = records(x, y)
        files["test_batch.bin"] = records(*test)
        files["batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
        folder, archive = "cifar-10-batches-bin", "cifar-10-binary.tar.gz"
    path = write_files(root, folder, files, archive if packed else None)
    train_x = np.concatenate([x for x, _ in batches])
    train_y = np.concatenate([y for _, y in batches])
    return path, (train_x, train_y), test, names


def make_cifar100(root: Path, fmt: str, packed: bool, train=None, test=None, seed=0):
    """Writes a tiny CIFAR-100 in the official `fmt`; fine class c has coarse class c // 5."""
    fine_names = [f"fine{i:02d}" for i in range(100)]
    coarse_names = [f"coarse{i:02d}" for i in range(20)]
    rng = np.random.default_rng(seed)
    if train is None:
        train = (random_images(7, seed + 1), rng.integers(0, 100, 7))
    if test is None:
        test = (random_images(4, seed + 2), rng.integers(0, 100, 4))
    files = {}
    if fmt == "python":
        for split, (x, y) in (("train", train), ("test", test)):
            files[split] = py2_pickle({
                b"fine_labels": [int(v) for v in y], b"coarse_labels": [int(v) // 5 for v in y],
                b"data": official_rows(x), b"batch_label": split.encode()})
        files["meta"] = py2_pickle({b"fine_label_names": [n.encode() for n in fine_names],
                                    b"coarse_label_names": [n.encode() for n in coarse_names]})
        folder, archive = "cifar-100-python", "cifar-100-python.tar.gz"
    else:
        for split, (x, y) in (("train", train), ("test", test)):
            labels = np.stack([y // 5, y], 1).astype(np.uint8)  # <coarse><fine>
            files[f"{split}.bin"] = np.concatenate([labels, official_rows(x)], 1).tobytes()
        files["fine_label_names.txt"] = "\n".join(fine_names).encode()
        files["coarse_label_names.txt"] = "\n".join(coarse_names).encode()
        folder, archive = "cifar-100-binary", "cifar-100-binary.tar.gz"
    path = write_files(root, folder, files, archive if packed else None)
    return path, train, test, fine_names, coarse_names


# --- Official CIFAR formats -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("packed", [False, True], ids=["folder", "targz"])
def test_cifar10_round_trip(tmp_path, fmt, packed):
    _, (train_x, train_y), (test_x, test_y), names = make_cifar10(tmp_path, fmt, packed)
    ds = data.load_vision("cifar10", data_dir=str(tmp_path), val_size=0)
    np.testing.assert_array_equal(ds.train.inputs, train_x)
    np.testing.assert_array_equal(ds.train.labels, train_y)
    np.testing.assert_array_equal(ds.test.inputs, test_x)
    np.testing.assert_array_equal(ds.test.labels, test_y)
    assert ds.train.inputs.dtype == np.uint8 and ds.train.labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.class_names == tuple(names)
    assert ds.val.inputs.shape == (0, 32, 32, 3)
    assert ds.class_to_superclass is None


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("packed", [False, True], ids=["folder", "targz"])
def test_cifar100_round_trip_fine_labels(tmp_path, fmt, packed):
    _, (train_x, train_y), (test_x, test_y), fine, coarse = make_cifar100(tmp_path, fmt, packed)
    ds = data.load_vision("cifar100", data_dir=str(tmp_path), val_size=0)
    np.testing.assert_array_equal(ds.train.inputs, train_x)
    np.testing.assert_array_equal(ds.train.labels, train_y)
    np.testing.assert_array_equal(ds.test.inputs, test_x)
    np.testing.assert_array_equal(ds.test.labels, test_y)
    assert ds.num_classes == 100 and ds.class_names == tuple(fine)

    coarse_ds = data.load_vision("cifar100", data_dir=str(tmp_path), val_size=0, labels="coarse")
    np.testing.assert_array_equal(coarse_ds.train.labels, train_y // 5)
    assert coarse_ds.class_names == tuple(coarse)


def test_official_layout_is_chw_planes(tmp_path):
    """Byte 0 is red (0, 0), byte 1 red (0, 1), byte 32 red (1, 0), byte 1024 green (0, 0)."""
    rows = np.zeros((1, 3072), np.uint8)
    rows[0, 0], rows[0, 1], rows[0, 32], rows[0, 1024], rows[0, 2048 + 33] = 10, 20, 30, 40, 50
    image = rows.reshape(1, 3, 32, 32).transpose(0, 2, 3, 1)
    make_cifar10(tmp_path, "binary", packed=False)
    record = np.concatenate([[[3]], rows], 1).astype(np.uint8).tobytes()
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(record)
    test = data.load_vision("cifar10", data_dir=str(tmp_path), val_size=0).test
    x = test.inputs[0]
    assert (x[0, 0, 0], x[0, 1, 0], x[1, 0, 0], x[0, 0, 1], x[1, 1, 2]) == (10, 20, 30, 40, 50)
    np.testing.assert_array_equal(test.inputs, image)
    assert test.labels.tolist() == [3]


def test_cifar_data_dir_may_be_the_archive_or_the_folder(tmp_path):
    archive, (train_x, _), _, _ = make_cifar10(tmp_path, "python", packed=True)
    ds = data.load_vision("cifar10", data_dir=str(archive), val_size=0)
    np.testing.assert_array_equal(ds.train.inputs, train_x)
    folder, (train_x, _), _, _, _ = make_cifar100(tmp_path / "x", "binary", packed=False)
    ds = data.load_vision("cifar100", data_dir=str(folder), val_size=0)
    np.testing.assert_array_equal(ds.train.inputs, train_x)


def test_cifar100_superclasses_when_every_class_is_present(tmp_path):
    y = np.arange(100)
    make_cifar100(tmp_path, "python", packed=True, train=(random_images(100, 5), y))
    ds = data.load_vision("cifar100", data_dir=str(tmp_path), val_size=0)
    assert ds.class_to_superclass == tuple(c // 5 for c in range(100))
    assert ds.superclass_names[3] == "coarse03"


def test_cifar_pickle_refuses_foreign_globals(tmp_path):
    make_cifar10(tmp_path, "python", packed=False)
    evil = b"cos\nsystem\n(S'echo hacked'\ntR."  # protocol-0 pickle calling os.system
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(ValueError, match="refusing to load os.system"):
        data.load_vision("cifar10", data_dir=str(tmp_path))


def test_cifar_truncated_binary_file(tmp_path):
    make_cifar10(tmp_path, "binary", packed=False)
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated"):
        data.load_vision("cifar10", data_dir=str(tmp_path))


@needs_cifar100_samples
@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_real_cifar100_images_through_official_formats(tmp_path, fmt):
    """The 20 real CIFAR-100 test images, packed in an official archive, come back exactly."""
    files = sorted(CIFAR100_SAMPLES.glob("cifar100_*_*.png"))
    assert len(files) == 20
    images = data.load_image_files([str(f) for f in files])
    labels = np.array([int(re.match(r"cifar100_\d+_(\d+)\.png", f.name).group(1))
                       for f in files])
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert labels.min() >= 0 and labels.max() < 100
    make_cifar100(tmp_path, fmt, packed=True, train=(images, labels), test=(images, labels))
    ds = data.load_vision("cifar100", data_dir=str(tmp_path), val_size=5, seed=1)
    np.testing.assert_array_equal(ds.test.inputs, images)
    np.testing.assert_array_equal(ds.test.labels, labels)
    assert len(ds.train) == 15 and len(ds.val) == 5


@needs_cifar100_samples
def test_real_cifar100_images_through_image_folder(tmp_path):
    files = sorted(CIFAR100_SAMPLES.glob("cifar100_*_*.png"))
    for split in ("train", "test"):
        for f in files:
            folder = tmp_path / split / f"{int(f.stem.split('_')[-1]):03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f.name).write_bytes(f.read_bytes())
    ds = data.load_vision("image_folder", data_dir=str(tmp_path), val_size=0)
    assert len(ds.train) == len(ds.test) == 20 and ds.image_shape == (32, 32, 3)
    by_label = sorted(files, key=lambda f: (int(f.stem.split("_")[-1]), f.name))
    for image, label, f in zip(ds.test.inputs, ds.test.labels, by_label):
        assert int(ds.class_names[label]) == int(f.stem.split("_")[-1])
        np.testing.assert_array_equal(image, np.asarray(Image.open(f).convert("RGB")))


# --- Missing data ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,archive", [("cifar10", "cifar-10-python.tar.gz"),
                                          ("cifar100", "cifar-100-python.tar.gz")])
def test_missing_cifar_names_path_and_file(tmp_path, name, archive):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_vision(name, data_dir=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and archive in msg and "wget" in msg
    assert f"tfds:{name}" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_cifar_without_data_dir(monkeypatch):
    monkeypatch.delenv("CUD_JAX_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError, match="CUD_JAX_DATA_DIR"):
        data.load_vision("cifar10")


def test_cifar_data_dir_from_environment(tmp_path, monkeypatch):
    _, (train_x, _), _, _ = make_cifar10(tmp_path, "binary", packed=True)
    monkeypatch.setenv("CUD_JAX_DATA_DIR", str(tmp_path))
    np.testing.assert_array_equal(data.load_vision("cifar10", val_size=0).train.inputs, train_x)


def test_missing_image_folder(tmp_path):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_vision("image_folder", data_dir=str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(err.value) and "train/<class>" in str(err.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(data.DataNotFoundError, match="no test/ folder"):
        data.load_vision("image_folder", data_dir=str(tmp_path))


# --- TFDS -----------------------------------------------------------------------------------------

def test_tfds_not_prepared_fails_fast_with_command(tmp_path):
    start = time.perf_counter()
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_vision("tfds:cifar100", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 1.0
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert f"tfds build cifar100 --data_dir={tmp_path}" in msg


def test_tfds_default_dir_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match=re.escape(str(tmp_path))):
        data.load_vision("tfds:svhn_cropped")


def _fake_prepared(root: Path, name="cifar100", version="3.0.2", splits=("train", "test")):
    folder = root / name / version
    folder.mkdir(parents=True)
    split_json = ", ".join(f'{{"name": "{s}"}}' for s in splits)
    (folder / "dataset_info.json").write_text(f'{{"name": "{name}", "splits": [{split_json}]}}')
    return folder


def test_tfds_prepared_but_package_missing(tmp_path, monkeypatch):
    folder = _fake_prepared(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install 'cud_jax\[tfds\]'") as err:
        data.load_vision("tfds:cifar100", data_dir=str(tmp_path))
    assert str(folder) in str(err.value)


def test_tfds_finds_newest_version_and_checks_splits(tmp_path, monkeypatch):
    _fake_prepared(tmp_path, version="3.0.2")
    newest = _fake_prepared(tmp_path, version="3.0.10", splits=("train", "extra"))
    assert data.find_prepared_tfds("cifar100", str(tmp_path)) == (str(tmp_path), str(newest))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ValueError, match="'test' is not one of them"):
        data.load_vision("tfds:cifar100", data_dir=str(tmp_path))
    with pytest.raises(ImportError):  # a valid split passes the check
        data.load_vision("tfds:cifar100", data_dir=str(tmp_path), test_split="extra")


# --- Image folders and tarballs -------------------------------------------------------------------

def _encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
        buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_image_tree(seed=0, size=8, classes=("cat", "dog", "emu"), per_class=(3, 2)):
    """{relative path: bytes} of PNGs, and the expected (train, test) arrays in load order."""
    rng = np.random.default_rng(seed)
    files, expected = {}, {"train": ([], []), "test": ([], [])}
    for split, count in zip(("train", "test"), per_class):
        for label, cls in enumerate(classes):
            for i in range(count):
                image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                files[f"{split}/{cls}/img{i:02d}.png"] = _encode(image, "PNG")
                expected[split][0].append(image)
                expected[split][1].append(label)
    return files, {k: (np.stack(v[0]), np.array(v[1])) for k, v in expected.items()}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)


def write_tar(path: Path, files: dict[str, bytes], prefix: str = "", reverse=False) -> None:
    with tarfile.open(path, "w:gz" if str(path).endswith("gz") else "w") as tar:
        for rel in sorted(files, reverse=reverse):
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(files[rel])
            tar.addfile(info, io.BytesIO(files[rel]))


def check_tree(ds, expected, classes=("cat", "dog", "emu")):
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(ds, split).inputs, expected[split][0])
        np.testing.assert_array_equal(getattr(ds, split).labels, expected[split][1])
    assert ds.class_names == tuple(classes) and ds.num_classes == len(classes)


def test_image_folder_png_round_trip(tmp_path):
    files, expected = make_image_tree()
    write_tree(tmp_path, files)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"not an image")
    check_tree(data.load_vision("image_folder", data_dir=str(tmp_path), val_size=0), expected)


@pytest.mark.parametrize("archive", ["imgs.tar", "imgs.tar.gz", "imgs.tgz"])
def test_image_tarball_round_trip(tmp_path, archive):
    files, expected = make_image_tree(seed=1)
    # A leading folder and reverse member order: neither may change the result.
    write_tar(tmp_path / archive, files, prefix="./my-data/", reverse=True)
    check_tree(data.load_vision("image_folder", data_dir=str(tmp_path / archive), val_size=0),
               expected)
    # A folder holding exactly one archive, and the `path=` override.
    check_tree(data.load_vision("image_folder", data_dir=str(tmp_path), val_size=0), expected)
    check_tree(data.load_vision("image_folder", path=str(tmp_path / archive), val_size=0),
               expected)


def test_image_folder_jpeg_grayscale_resize_and_limit(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (2, 2, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    files = {f"{split}/{cls}/{i}.jpg": _encode(smooth, "JPEG")
             for split in ("train", "test") for cls in ("a", "b") for i in range(3)}
    write_tar(tmp_path / "j.tar.gz", files)
    ds = data.load_vision("image_folder", data_dir=str(tmp_path / "j.tar.gz"), val_size=0)
    assert ds.train.inputs.shape == (6, 16, 16, 3)
    assert np.abs(ds.train.inputs.astype(int) - smooth).mean() < 8  # JPEG is lossy
    gray = data.load_vision("image_folder", data_dir=str(tmp_path / "j.tar.gz"), val_size=0,
                            channels=1, image_size=(8, 12), limit_per_class=2)
    assert gray.train.inputs.shape == (4, 8, 12, 1) and gray.test.inputs.shape == (4, 8, 12, 1)
    assert gray.train.labels.tolist() == [0, 0, 1, 1]


def test_image_folder_limit_keeps_first_names(tmp_path):
    files, expected = make_image_tree(per_class=(3, 2))
    write_tar(tmp_path / "d.tar", files, reverse=True)
    ds = data.load_vision("image_folder", data_dir=str(tmp_path / "d.tar"), val_size=0,
                          limit_per_class=1)
    np.testing.assert_array_equal(ds.train.inputs, expected["train"][0][::3])
    np.testing.assert_array_equal(ds.test.inputs, expected["test"][0][::2])


def test_image_folder_cache(tmp_path):
    files, expected = make_image_tree()
    write_tree(tmp_path / "d", files)
    cache = tmp_path / "cache"
    first = data.load_vision("image_folder", data_dir=str(tmp_path / "d"), val_size=0,
                             cache_dir=str(cache))
    (npz,) = cache.glob("*.npz")
    again = data.load_vision("image_folder", data_dir=str(tmp_path / "d"), val_size=0,
                             cache_dir=str(cache))
    check_tree(first, expected)
    check_tree(again, expected)
    # A different decoding option is a different cache entry.
    data.load_vision("image_folder", data_dir=str(tmp_path / "d"), val_size=0,
                     cache_dir=str(cache), limit_per_class=1)
    assert len(list(cache.glob("*.npz"))) == 2 and npz.exists()


def test_image_folder_errors(tmp_path):
    files, _ = make_image_tree(size=8)
    files["train/cat/big.png"] = _encode(np.zeros((9, 8, 3), np.uint8), "PNG")
    write_tree(tmp_path / "mixed", files)
    with pytest.raises(ValueError, match="image_size"):
        data.load_vision("image_folder", data_dir=str(tmp_path / "mixed"))
    files, _ = make_image_tree()
    files["test/zebra/x.png"] = files["test/cat/img00.png"]
    write_tree(tmp_path / "extra", files)
    with pytest.raises(ValueError, match="zebra"):
        data.load_vision("image_folder", data_dir=str(tmp_path / "extra"))
    files, _ = make_image_tree()
    files["train/cat/broken.png"] = b"garbage"
    write_tree(tmp_path / "broken", files)
    with pytest.raises(ValueError, match="broken.png"):
        data.load_vision("image_folder", data_dir=str(tmp_path / "broken"))


@needs_cifar10_jpeg
def test_real_cifar10_tarball_first_files():
    ds = data.load_vision("image_folder", data_dir=str(CIFAR10_JPEG.parent), val_size=20,
                          limit_per_class=5)
    assert ds.num_classes == 10 and ds.class_names[0] == "airplane"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 20, 50)
    assert ds.train.inputs.shape[1:] == (32, 32, 3)
    assert np.bincount(ds.val.labels).tolist() == [2] * 10


@needs_cifar10_jpeg
@pytest.mark.skipif(os.environ.get("CUD_JAX_SLOW_TESTS") != "1",
                    reason="decodes 60,000 JPEGs; set CUD_JAX_SLOW_TESTS=1 to run")
def test_real_cifar10_tarball_full():
    """All 60,000 JPEGs: counts 50,000 / 10,000, balance and CIFAR-like statistics."""
    ds = data.load_vision("image_folder", data_dir=str(CIFAR10_JPEG))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45000, 5000, 10000)
    assert ds.num_classes == 10 and ds.image_shape == (32, 32, 3)
    assert np.bincount(ds.val.labels).tolist() == [500] * 10
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    np.testing.assert_allclose(ds.mean, data.CIFAR10_MEAN, atol=0.01)
    np.testing.assert_allclose(ds.std, data.CIFAR10_STD, atol=0.01)


# --- Validation split, subsets, statistics, registry ----------------------------------------------

def indexed_source(data_dir=None, *, n_train=1000, n_test=300, num_classes=10):
    """Images whose first pixels spell their index, so splits can be traced back."""
    def make(n, offset):
        idx = np.arange(n) + offset
        images = np.zeros((n, 4, 4, 3), np.uint8)
        images[:, 0, 0, 0], images[:, 0, 0, 1] = idx % 256, idx // 256
        images[:, 1:] = 100 + (idx % 7)[:, None, None, None]
        return data.make_split(images, idx % num_classes)
    return data.RawVision(make(n_train, 0), make(n_test, 0),
                          tuple(f"c{i}" for i in range(num_classes)))


def index_of(split):
    return split.inputs[:, 0, 0, 0].astype(int) + 256 * split.inputs[:, 0, 0, 1].astype(int)


@pytest.fixture
def indexed(monkeypatch):
    monkeypatch.setitem(_sources._REGISTRY["vision"], "indexed", indexed_source)
    return "indexed"


def test_val_split_disjoint_stratified_deterministic(indexed):
    ds = data.load_vision(indexed, val_size=100, seed=3)
    train, val = index_of(ds.train), index_of(ds.val)
    assert len(val) == 100 and len(train) == 900
    assert not set(train) & set(val)
    assert sorted(np.concatenate([train, val])) == list(range(1000))
    assert np.bincount(ds.val.labels).tolist() == [10] * 10
    np.testing.assert_array_equal(ds.train.labels, train % 10)  # labels follow their images
    again = data.load_vision(indexed, val_size=100, seed=3)
    np.testing.assert_array_equal(index_of(again.val), val)
    other = data.load_vision(indexed, val_size=100, seed=4)
    assert set(index_of(other.val)) != set(val)
    # The test split is never touched by the validation carve.
    np.testing.assert_array_equal(index_of(ds.test), np.arange(300))


def test_subsets_balanced_and_independent_of_val(indexed):
    full = data.load_vision(indexed, val_size=100, seed=0)
    quick = data.load_vision(indexed, val_size=100, seed=0, train_subset=50, test_subset=30)
    np.testing.assert_array_equal(index_of(quick.val), index_of(full.val))
    assert np.bincount(quick.train.labels).tolist() == [5] * 10
    assert np.bincount(quick.test.labels).tolist() == [3] * 10
    assert set(index_of(quick.train)) <= set(index_of(full.train))
    assert quick.mean == full.mean and quick.std == full.std  # stats before subsetting
    np.testing.assert_array_equal(
        index_of(quick.train),
        index_of(data.load_vision(indexed, val_size=100, seed=0, train_subset=50).train))


def test_stratified_order_handles_unequal_classes():
    labels = np.array([0] * 90 + [1] * 10)
    order = vision.stratified_order(labels, np.random.default_rng(0))
    assert sorted(order) == list(range(100))
    assert np.bincount(labels[order[:20]]).tolist() == [18, 2]


def test_channel_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (50, 5, 5, 3), dtype=np.uint8)
    mean, std = data.channel_stats(images, chunk=7)
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0) / 255, rtol=1e-12)
    np.testing.assert_allclose(std, images.reshape(-1, 3).std(0) / 255, rtol=1e-9)


def test_load_vision_argument_errors(indexed):
    with pytest.raises(ValueError, match="unknown vision data set 'cifar11'.*tfds:"):
        data.load_vision("cifar11")
    with pytest.raises(ValueError, match="`val_size`=1000"):
        data.load_vision(indexed, val_size=1000)
    with pytest.raises(ValueError, match="`train_subset`=901"):
        data.load_vision(indexed, val_size=100, train_subset=901)
    with pytest.raises(ValueError, match="`test_subset`=0"):
        data.load_vision(indexed, val_size=0, test_subset=0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['n_tran'\].*n_train"):
        data.load_vision(indexed, n_tran=5)
    with pytest.raises(ValueError, match="already registered"):
        data.register_vision_source("synthetic", indexed_source)
    assert {"cifar10", "cifar100", "image_folder", "synthetic"} <= set(data.vision_sources())


def test_split_is_a_pytree_and_validated():
    jax = pytest.importorskip("jax")
    split = data.make_split(np.zeros((2, 3, 3, 1), np.int64), np.array([0, 1]))
    assert split.inputs.dtype == np.uint8 and len(split) == 2
    leaves = jax.tree_util.tree_leaves(split)
    assert len(leaves) == 2
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.make_split(np.zeros((2, 3, 3, 1), np.uint8), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        data.make_split(np.zeros((2, 3, 3), np.uint8), np.zeros(2, np.int32))


# --- Synthetic source -----------------------------------------------------------------------------

SMALL = dict(num_classes=12, num_superclasses=4, image_size=16, train_per_class=20,
             test_per_class=10)


def test_synthetic_shapes_and_determinism():
    a = data.load_vision("synthetic", val_size=24, **SMALL)
    b = data.load_vision("synthetic", val_size=24, **SMALL)
    assert a.image_shape == (16, 16, 3) and a.num_classes == 12
    assert (len(a.train), len(a.val), len(a.test)) == (216, 24, 120)
    assert a.train.inputs.dtype == np.uint8 and a.train.labels.dtype == np.int32
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split).inputs, getattr(b, split).inputs)
        np.testing.assert_array_equal(getattr(a, split).labels, getattr(b, split).labels)
    assert a.class_to_superclass == tuple(c // 3 for c in range(12))
    assert len(a.superclass_names) == 4
    assert np.bincount(a.test.labels).tolist() == [10] * 12
    # The split seed moves the validation set; the data themselves stay put.
    c = data.load_vision("synthetic", val_size=24, seed=1, **SMALL)
    np.testing.assert_array_equal(c.test.inputs, a.test.inputs)
    assert not np.array_equal(c.val.inputs, a.val.inputs)
    d = data.load_vision("synthetic", val_size=24, data_seed=1, **SMALL)
    assert not np.array_equal(d.test.inputs, a.test.inputs)


def test_synthetic_default_size_and_ambiguity():
    spec = data.SyntheticSpec(**SMALL)
    sample = data.generate_synthetic(spec, "train")
    assert sample.mix_weights.min() >= 0 and sample.mix_weights.max() <= spec.max_mix
    assert (np.abs(sample.mix_weights - 0.5) < 0.1).mean() > 0.1  # genuinely ambiguous ones
    assert 0 < (sample.mix_weights > 0.5).mean() < 0.15  # a few minority labels
    supers = np.array([c // 3 for c in range(12)])
    assert np.all(supers[sample.siblings] == supers[sample.labels])
    assert np.all(sample.siblings != sample.labels)
    defaults = data.SyntheticSpec()
    assert (defaults.num_classes, defaults.num_superclasses, defaults.image_size) == (100, 20, 32)


def test_synthetic_is_learnable_but_not_trivial():
    """A nearest-class-mean classifier (a weak learner) is far above chance, not perfect."""
    ds = data.load_vision("synthetic", val_size=0, **dict(SMALL, train_per_class=60))
    x = ds.train.inputs.reshape(len(ds.train), -1).astype(np.float32)
    means = np.stack([x[ds.train.labels == c].mean(0) for c in range(ds.num_classes)])
    xt = ds.test.inputs.reshape(len(ds.test), -1).astype(np.float32)
    pred = np.argmin(((xt[:, None] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == ds.test.labels).mean()
    assert 3 / ds.num_classes < accuracy < 0.99
    # Its mistakes fall mostly inside the true superclass: the hierarchy is real.
    wrong = pred != ds.test.labels
    assert (pred[wrong] // 3 == ds.test.labels[wrong] // 3).mean() > 0.5


def test_synthetic_ood():
    near = data.load_synthetic_ood("near", num_examples=50, **SMALL)
    far = data.load_synthetic_ood("far", **SMALL)
    assert near.inputs.shape == (50, 16, 16, 3) and np.all(near.labels == -1)
    assert len(far) == 12 * 10  # default: as many as the in-distribution test split
    again = data.load_synthetic_ood("near", num_examples=50, **SMALL)
    np.testing.assert_array_equal(near.inputs, again.inputs)
    ind = data.load_vision("synthetic", val_size=0, **SMALL)
    assert not any(np.array_equal(near.inputs[0], x) for x in ind.test.inputs)
    with pytest.raises(ValueError, match="'near' or 'far'"):
        data.load_synthetic_ood("medium", **SMALL)


def test_synthetic_prototypes_are_seeded_per_class():
    """A class looks the same whatever else is generated: OOD sets never shift the world."""
    from cud_jax.data import synthetic

    small = data.SyntheticSpec(**SMALL)
    wider = data.SyntheticSpec(**dict(SMALL, num_classes=16))  # 4 classes per superclass
    np.testing.assert_array_equal(synthetic._prototypes(small, [(1, 2)]),
                                  synthetic._prototypes(wider, [(1, 2), (0, 0)])[:1])
    # Near-OOD class 0 of the 12-class world is class (0, 3): a training class of the wider one.
    assert not np.array_equal(synthetic._prototypes(small, [(0, 3)]),
                              synthetic._prototypes(small, [(0, 2)]))


def test_synthetic_bad_options():
    with pytest.raises(ValueError, match="num_superclasses"):
        data.load_vision("synthetic", num_classes=10, num_superclasses=3)
    with pytest.raises(TypeError, match="unknown synthetic option"):
        data.load_vision("synthetic", num_clases=10)
