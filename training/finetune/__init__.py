"""Fine-tuning: data-driven defaults, training rows and the dev set (`prepare`), losses, the curriculum, dev
evaluation and its noise, early stopping, the checkpoint choice, the training log and the advisor that reads it."""
