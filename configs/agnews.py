"""AG News (4 topics): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/agnews.py --workdir=runs/agnews
    python -m cud_jax.main --config=configs/agnews.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe in `get_config` below (BERT-base teacher, 4L-256 student, AdamW, batch 32, KD
temperature 2); arguments: `cud_jax.configs.text_recipe`. Paper (accuracy %): CUD slightly below KD (4 classes).
"""

from cud_jax.configs import text_recipe


def get_config(arg=None):
    # (teacher, student) learning rates and epochs; `offline_*` with offline=1.
    return text_recipe(arg, "hf:ag_news",
                       optimizer="adamw", weight_decay=0.01, grad_clip=1.0, warmup_fraction=0.1,
                       batch_size=32, temperature=2.0, lam_kd=0.8, lam_ce=0.2,
                       dkd_warmup_fraction=0.2, lr=(3e-5, 1e-4), epochs=(5.0, 10.0),
                       offline_lr=(1e-4, 2e-4), offline_epochs=(2.0, 2.0))
