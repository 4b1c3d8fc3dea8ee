"""AG News (4 topics): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/agnews.py --workdir=runs/agnews
    python -m cud_jax.main --config=configs/agnews.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe and arguments: `cud_jax.configs.text_config` (BERT-base teacher, 4L-256
student, AdamW, batch 32, KD temperature 2). Paper (accuracy %): CUD slightly below KD (4 classes).
"""

from cud_jax.configs import text_config


def get_config(arg=None):
    return text_config(arg, "hf:ag_news")
