"""A promotion into the S3 registry (moto on 127.0.0.1) SIGKILLed at 20 random points: before any of its object
writes (each file's upload, the version marker, the champion, the history event). After each, `embedgate history`
and `embedgate rollback` work, a replica starting now loads the champion through serve's read path, and the old
champion is intact. The seed is printed in every assertion; EMBEDGATE_TEST_KILL_SEED=<seed> replays a run."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

from gates.cli import main
from service.model.serving_model import load_version
from service.registry.registry import Registry
from service.storage.object_store import KILL_BEFORE_WRITE_ENV
from tests.service.serving import TINY_SERVING_DIM, promote

pytestmark = pytest.mark.integration
TRIALS = 20
KILLED_PROMOTER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from service.registry.registry import Registry
    Registry(sys.argv[1]).add_version(
        {"onnx": Path(sys.argv[2])}, metadata={"serving_dim": int(sys.argv[3])}, who="killed", reason="kill",
        run_id="killed",
    )
""")


def test_a_promotion_killed_at_20_random_points_leaves_a_registry_every_command_reads(
    tiny_exports, s3_registry_url, s3_env, tmp_path, capsys
):
    seed = int(os.environ.get("EMBEDGATE_TEST_KILL_SEED") or random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    registry = Registry(s3_registry_url)
    bases = [promote(registry, tiny_exports[name], run_id=f"base-{name}") for name in "ab"]
    uploads = sum(1 for path in tiny_exports["a"].rglob("*") if path.is_file())
    writes = uploads + 3  # the uploads, the version marker, the champion switch, the history event
    points = [rng.randint(1, writes) for _ in range(TRIALS)]
    for trial, kill_at in enumerate(points):
        where = f"seed {seed} (EMBEDGATE_TEST_KILL_SEED={seed} replays it), trial {trial}, killed before write {kill_at} of {writes}"
        before = Registry(s3_registry_url).champion()
        events_before = len(Registry(s3_registry_url).history())
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                KILLED_PROMOTER,
                s3_registry_url,
                str(tiny_exports["ab"[trial % 2]]),
                str(TINY_SERVING_DIM),
            ],
            env={**os.environ, KILL_BEFORE_WRITE_ENV: str(kill_at)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -9, (where, proc.returncode, proc.stderr[-2000:])
        # a replica starting now: its own fresh cache, serve's read path (download, verify, load, warm up)
        fresh = Registry(s3_registry_url, cache_dir=tmp_path / f"replica-{trial}")
        champion = fresh.champion()
        if kill_at == writes:  # killed after the switch, before its history event: the new version serves
            assert champion.previous == before.version and champion.version not in bases, where
            # the next command records the switch (at once here; by default once it is a minute old)
            assert fresh.reconcile(record_after_s=0), where
            assert fresh.history()[-1].version == champion.version, where
        else:
            assert champion == before, where
        model = load_version(fresh.version_dir(champion.version), precision=None, threads=1)
        assert model.version == champion.version, where
        assert fresh.verify(before.version)["files"], where  # the old champion intact
        assert main(["history", "--registry", s3_registry_url, "--json"]) == 0, where
        assert len(capsys.readouterr().out.splitlines()) >= events_before, where  # no event lost
        target = bases[1] if champion.version != bases[1] else bases[0]
        code = main(
            ["rollback", "--registry", s3_registry_url, "--to", target, "--reason", where, "--no-bento-store"]
        )
        assert code == 0 and Registry(s3_registry_url).champion().version == target, (
            where,
            capsys.readouterr(),
        )
        capsys.readouterr()
