"""Flax NNX models. Vision: the CIFAR zoo of the RepDistiller / mdistiller KD benchmarks.

    from cud_jax import models
    model = models.create_model("resnet32x4", num_classes=100, rngs=nnx.Rngs(0))
    logits = model(images)  # [N, 32, 32, 3] NHWC -> [N, 100] float32

On CPU the convs compute weight gradients as im2col products (faster there than XLA's);
`models.set_conv_weight_grad(model, "xla" | "im2col" | "auto")` switches a built model.

Parameter counts equal the PyTorch definitions (pinned in tests/test_models.py).
"""

from cud_jax.models.conv import (WEIGHT_GRAD_MODES, check_conv_weight_grad,
                                 conv_im2col_weight_grad, set_conv_weight_grad)
from cud_jax.models.mobilenetv2 import MobileNetV2
from cud_jax.models.registry import (check_model_name, count_params, create_model,
                                     create_text_model, list_models)
from cud_jax.models.resnet import CifarResNet
from cud_jax.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from cud_jax.models.vgg import VGG
from cud_jax.models.wide_resnet import WideResNet

# Text: BERT encoder + classification head, Hugging Face checkpoint loading (cud_jax.models.bert).
from cud_jax.models.bert import BertClassifier, BertConfig, BertEncoder, bert_student
from cud_jax.models.bert_weights import hf_state_dict, load_bert_classifier
from cud_jax.models.hf_loading import (
    CheckpointNotFoundError,
    expand_package_path,
    resolve_checkpoint,
)
