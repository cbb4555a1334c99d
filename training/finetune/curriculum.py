"""Easy-to-hard curriculum: a batch sampler that walks the mined stages in order within every epoch
(random negatives, then BM25, then model-mined), shuffling within each stage with no duplicate texts in a batch.

Passed to the trainer as `batch_sampler=functools.partial(CurriculumBatchSampler, stages=...)` (a partial of a
module-level class, so the training arguments stay picklable for checkpoints).
"""

from __future__ import annotations

from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler


class CurriculumBatchSampler(DefaultBatchSampler):
    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool,
        stages: list[tuple[str, int, int]],
        valid_label_columns=None,
        generator=None,
        seed: int = 0,
    ):
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        covered = sorted((start, end) for _, start, end in stages)
        if (
            covered[0][0] != 0
            or covered[-1][1] != len(dataset)
            or any(a[1] != b[0] for a, b in zip(covered, covered[1:], strict=False))
        ):
            raise ValueError(
                f"curriculum stages {stages} must tile the dataset rows 0..{len(dataset)} in order"
            )
        self.stages = [(start, end) for _, start, end in stages if end > start]
        self.samplers = [
            NoDuplicatesBatchSampler(
                dataset.select(range(start, end)),
                batch_size=batch_size,
                drop_last=drop_last,
                valid_label_columns=valid_label_columns,
                generator=generator,
                seed=seed,
            )
            for start, end in self.stages
        ]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __iter__(self):
        for (start, _), sampler in zip(self.stages, self.samplers, strict=True):
            for batch in sampler:
                yield [start + i for i in batch]

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)
