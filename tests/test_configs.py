"""The recipes in configs/: each loads, is complete, resolves as recorded, and carries its
own DKD settings."""

import glob
import json
import os

import pytest

from _config_snapshots import CASES, FIXTURE, REPO, expected, load, resolve
from cud_jax import configs, pipeline

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
with open(FIXTURE, encoding="utf-8") as _f:
    SNAPSHOTS = json.load(_f)


def test_every_config_file_has_recorded_cases():
    assert sorted(CASES) == sorted(os.path.basename(p)[:-3] for p in CONFIG_FILES)
    assert {name: sorted(cases) for name, cases in SNAPSHOTS.items()} == {
        name: sorted(args) for name, args in CASES.items()}


@pytest.mark.parametrize("name, arg", [(n, a) for n, args in CASES.items() for a in args])
def test_recipe_resolves_to_its_recorded_fields(name, arg):
    """Every field (value and type) as tests/_config_snapshots.py recorded it."""
    assert resolve(name, arg) == expected(SNAPSHOTS, name, arg)


@pytest.mark.parametrize("name, arg", [("cifar100", "student=6l"), ("cifar10", "offline=1"),
                                       ("clinc150", "pair=a-b"), ("massive", "offline"),
                                       ("cifar100", "pair=resnet8")])
def test_unknown_config_arguments_fail(name, arg):
    with pytest.raises(ValueError, match="Unknown config arguments|not of the form|TEACHER-STUDENT"):
        load(name, arg)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_recipe_is_complete(path):
    configs.validate(load(os.path.basename(path)[:-3]))


def test_unknown_and_missing_fields_fail_with_their_names():
    config = load("quickstart")
    config.student.temprature = 2.0
    with pytest.raises(ValueError, match="Unknown config field 'student.temprature'"):
        configs.validate(config)
    config = load("quickstart")
    del config.eval["num_bins"]
    with pytest.raises(ValueError, match="Config field 'eval.num_bins' is missing"):
        configs.validate(config)
    config = load("quickstart")
    config.data.tokenizer = "bert-base-uncased"  # a text field on a vision run
    with pytest.raises(ValueError, match="Unknown config field 'data.tokenizer'"):
        configs.validate(config)


def test_the_run_checks_the_config_before_anything_else(tmp_path):
    config = load("quickstart")
    del config.parallel["fsdp_min_size"]
    with pytest.raises(ValueError, match="'parallel.fsdp_min_size' is missing"):
        pipeline.run(config, str(tmp_path))
    assert os.listdir(tmp_path) == []  # failed before creating anything


@pytest.mark.parametrize("pair, beta", [
    ("wrn_40_2-wrn_16_2", 6.0), ("wrn_40_2-wrn_40_1", 6.0), ("vgg13-vgg8", 6.0),
    ("vgg13-mobilenetv2", 6.0), ("resnet56-resnet20", 2.0), ("resnet110-resnet32", 2.0),
    ("resnet32x4-resnet8x4", 8.0), ("resnet32x4-shufflenetv1", 8.0)])
def test_dkd_beta_is_dkds_own_per_pair_value(pair, beta):
    for name in ("cifar100", "cifar10"):
        student = load(name, f"pair={pair},method=dkd").student
        assert student.dkd_beta == beta
        assert student.dkd_warmup_epochs == 20.0


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_a_shorter_cifar_recipe_keeps_the_schedules_shape(name):
    """epochs=E: the lr drops at 150/180/210 of 240 and DKD warms up over 20 of 240, scaled."""
    full, short = load(name, "method=dkd"), load(name, "method=dkd,epochs=24")
    assert full.teacher.lr_milestones == (150, 180, 210) and full.student.epochs == 240.0
    for stage in (short.teacher, short.student):
        assert stage.epochs == 24.0 and stage.lr_milestones == (15, 18, 21)
    assert short.student.dkd_warmup_epochs == pytest.approx(2.0)
    assert load(name, "epochs=10").student.lr_milestones == (6.25, 7.5, 8.75)
    configs.validate(short)
    for bad in ("epochs=0", "epochs=-5", "epochs=many"):
        with pytest.raises(ValueError, match="`epochs` must be a positive number"):
            load(name, bad)


@pytest.mark.parametrize("name, arg", [("quickstart", None), ("clinc150", None),
                                       ("clinc150", "offline=1"), ("banking77", None),
                                       ("trec", None), ("agnews", None), ("massive", None)])
def test_dkd_reaches_full_strength_within_every_recipe(name, arg):
    """A 20-epoch warm-up is CIFAR's; shorter runs warm up over part of their own length."""
    student = load(name, arg).student
    assert 0 < student.dkd_warmup_epochs <= 0.5 * student.epochs
