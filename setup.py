"""Install cud_jax: `pip install -e .[test]` for development."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.4.35",
    "flax>=0.10",
    "optax>=0.2.3",
    "orbax-checkpoint>=0.6",
    "ml-collections>=0.1.1",
    "chex>=0.1.87",
    "numpy>=1.26",
    "absl-py>=1.4",
    "pillow>=10",  # JPEG/PNG image folders
    "tensorboardX>=2.6",  # TensorBoard events without TensorFlow
    "matplotlib>=3.7",  # report figures
]

EXTRAS = {
    # tokenizers/safetensors (small) let CI run the text tests; the PyTorch parity test
    # skips without torch + transformers.
    # pytest-xdist: the README's test command spreads the suite over the cores (XLA compiles
    # one program on one core; most of the suite's time is compiling).
    "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "scipy>=1.11",
             "tokenizers>=0.15", "safetensors>=0.4"],
    # Preparing TFDS data sets needs TensorFlow itself; the CPU build is enough.
    "tfds": ["tensorflow-datasets>=4.9", "tensorflow-cpu>=2.15"],
    "text": ["tokenizers>=0.15", "safetensors>=0.4", "huggingface_hub>=0.20"],
}

setup(
    name="cud_jax",
    version="0.1.0",
    description="Calibrated Uncertainty Distillation (CUD) in JAX/Flax: losses, metrics, trainer.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["cud_jax", "cud_jax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
