"""Backward-compatible upgrades: a new version that also answers in the embedding space of older versions, so a
client that stored their vectors gets the new model's gain without re-embedding (docs/versions.md).

    data.py       the training side's (query, positive documents) pairs, from any dataset type with anchors
    build.py      fit the backward map against an old version's served graph (training/compat.py) and export the
                  compatible graph (candidate + map, truncation, L2: fp32 and int8) into the run
    evaluate.py   compat (new queries in the old space vs the old stored documents) vs old-old vs new-new, at
                  every old dim, on the exact served graphs; offered only beyond noise with no dim losing
    stage.py      which old spaces a run answers in (auto: the champion's own and those it already answers in)
"""
