"""AG News (4 topics): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/agnews.py --workdir=runs/agnews
    python -m cud_jax.main --config=configs/agnews.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online, pip install datasets).

Recipe: BERT-base teacher (bert-base-uncased), 4L-256 student
(google/bert_uncased_L-4_H-256_A-4; `student=6l` for 6L-768, `student=4l_scratch` for a
random 4L-256), AdamW, batch 32, max length 128, weight decay 0.01, gradient clipping 1.0,
10% warm-up then cosine; KD temperature 2, lam_kd 0.8 / lam_ce 0.2; teacher probabilities
cached once (text is not augmented). Learning rates and epochs are ours (the paper gives
none): teacher 3e-5 for 5 epochs, student 1e-4 for 10. Needs the Hugging Face Hub (online) or
local folders for the checkpoints (`--config.teacher.model=bert:/path`).
Paper (accuracy %): CUD slightly below KD (few classes). Run 3 seeds (`--config.seed`).
"""

from cud_jax.train.config_base import text_config


def get_config(arg=None):
    return text_config(arg, "hf:ag_news")
