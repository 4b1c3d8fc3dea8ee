"""MASSIVE en-US (60 intents): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/massive.py --workdir=runs/massive
    python -m cud_jax.main --config=configs/massive.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online, pip install datasets) with the en-US config.

Recipe: BERT-base teacher (bert-base-uncased), 4L-256 student
(google/bert_uncased_L-4_H-256_A-4; `student=6l` for 6L-768, `student=4l_scratch` for a
random 4L-256), AdamW, batch 32, max length 128, weight decay 0.01, gradient clipping 1.0,
10% warm-up then cosine; KD temperature 2, lam_kd 0.8 / lam_ce 0.2; teacher probabilities
cached once (text is not augmented). Learning rates and epochs are ours (the paper gives
none): teacher 3e-5 for 5 epochs, student 1e-4 for 10. Needs the Hugging Face Hub (online) or
local folders for the checkpoints (`--config.teacher.model=bert:/path`).
Paper (accuracy %): KD 82.00 -> CUD 87.22 (4L student), teacher 89.47. Run 3 seeds (`--config.seed`).
"""

from cud_jax.train.config_base import text_config


def get_config(arg=None):
    return text_config(arg, "hf:AmazonScience/massive")
