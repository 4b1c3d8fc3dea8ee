"""Checkpoints from and for other frameworks (the command line is `python -m cud_jax.convert`).

- `torch_pickle`: `torch.save` files read as numpy arrays without PyTorch, by an unpickler
  that refuses every object but tensors and containers.
- `cifar`: RepDistiller / mdistiller PyTorch CIFAR state dicts -> the `cud_jax.models` zoo.
- `hf_export`: a trained text model -> a Hugging Face `BertForSequenceClassification` folder.
"""
