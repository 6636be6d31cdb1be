"""Fine-tuning of the torch policy families: data, LoRA, the training loop, ``vla-ros train``."""
