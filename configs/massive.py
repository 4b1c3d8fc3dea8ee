"""MASSIVE en-US (60 intents): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/massive.py --workdir=runs/massive
    python -m cud_jax.main --config=configs/massive.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe and arguments: `cud_jax.configs.text_config` (BERT-base teacher, 4L-256
student, AdamW, batch 32, KD temperature 2). Paper (accuracy %): KD 82.00 -> CUD 87.22 (4L student), teacher 89.47.
"""

from cud_jax.configs import text_config


def get_config(arg=None):
    return text_config(arg, "hf:AmazonScience/massive")
