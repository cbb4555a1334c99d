"""Small dims after training: the post-hoc Matryoshka rotation (PCA, then refined on the pairs) and the
adaptor measured beside it."""
