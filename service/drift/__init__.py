"""Drift monitoring for the served model: capture -> rolling windows on disk -> Evidently drift per window.

    capture.py      DriftCapture: samples served texts off the request path (bounded queue + writer thread)
    descriptors.py  text descriptors per input: tokens, truncation, charset/script shares, empty-ish
    windows.py      rolling window files (N rows each, the last K kept) and their reader
    reference.py    the reference a promoted version carries (reference/ in its registry folder)
    calibration.py  thresholds from held-out queries (never trained on) judged against the rest of the reference
    thresholds.py   the rules a threshold follows (floors, held-out minimums, novelty's per-window threshold)
    compute.py      one window against the reference: an Evidently report, four signals, a verdict
    runner.py       process the windows that have no result yet: summaries, snapshots, the alert streak
    monitor.py      the service's background worker around the runner, with gauges.py and a JSON alert log

Nothing here imports torch; Evidently and pandas are imported only where a drift computation runs. See docs/drift.md.
"""
