"""AG News (4 topics): the paper's text setting (PAPER.md section 6).

    python -m cud_jax.main --config=configs/agnews.py --workdir=runs/agnews
    python -m cud_jax.main --config=configs/agnews.py:student=6l,method=kd,teacher_loss=ce ...

Read through Hugging Face datasets (online; pip install datasets).
Recipe and arguments: the paper's text recipe, `recipe` in configs/clinc150.py (BERT-base
teacher, 4L-256 student, AdamW, batch 32, KD temperature 2).
Paper (accuracy %): CUD slightly below KD (4 classes).
"""

from cud_jax.configs import load_recipe_module

text = load_recipe_module("clinc150.py", relative_to=__file__)


def get_config(arg=None):
    return text.recipe(arg, online_data="hf:ag_news", offline_data="hf:ag_news")
