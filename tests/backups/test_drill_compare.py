"""The drill's comparisons: what a restored copy must match to be verified."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from roost.backups.drill import (
    DrillError,
    bundle_refs,
    clone_and_check,
    compare_manifests,
    compare_redis,
    compare_refs,
    file_hashes,
    git_facts,
    manifest,
    policy_roles,
    rdb_facts,
    verdict,
)


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    os.symlink("/etc/passwd", root / "link")  # recorded, never followed
    return root


def test_a_faithful_copy_has_the_same_manifest(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    subprocess.run(["cp", "-a", str(a), str(tmp_path / "b")], check=True)
    m = manifest(a)
    assert m["link"] == "link /etc/passwd"
    assert m["a.txt"].startswith("file ") and m["sub"].startswith("dir ")
    assert compare_manifests(m, manifest(tmp_path / "b")) == []


def test_flipped_bytes_missing_and_extra_files_are_named(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    before = manifest(a)
    data = bytearray((a / "sub" / "b.bin").read_bytes())
    data[7] ^= 0xFF
    (a / "sub" / "b.bin").write_bytes(bytes(data))
    (a / "a.txt").unlink()
    (a / "new").write_text("x")
    (a / "link").unlink()
    os.symlink("elsewhere", a / "link")
    problems = compare_manifests(before, manifest(a))
    assert problems == ["1 missing: a.txt", "1 not in the backup: new", "2 differ: link, sub/b.bin"]
    assert verdict(problems).count(";") == 2 and verdict([]) == ""


def test_a_long_list_is_cut_short() -> None:
    expected = {f"f{i:02}": "file x 644" for i in range(12)}
    assert compare_manifests(expected, {}) == ["12 missing: f00, f01, f02, f03, f04 and 7 more"]


def test_file_hashes_cover_regular_files_only(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    assert set(file_hashes(a)) == {"a.txt", "sub/b.bin"}


def _repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "f").write_text("one")
    subprocess.run(["git", "-C", str(repo), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "one"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "tag", "v1"], check=True)
    bundle = tmp / "app.bundle"
    subprocess.run(["git", "-C", str(repo), "bundle", "create", "-q", str(bundle), "--all"],
                   check=True)  # fmt: skip
    return bundle


def test_a_bundle_clones_and_keeps_its_refs(tmp_path: Path) -> None:
    bundle = _repo(tmp_path)
    facts = git_facts(bundle)
    assert set(facts["refs"]) == {"refs/heads/main", "refs/tags/v1"}
    restored = clone_and_check(bundle, tmp_path / "clone")
    assert compare_refs(facts["refs"], restored) == []
    assert compare_refs({**facts["refs"], "refs/heads/gone": "0" * 40}, restored) == [
        "1 refs missing: refs/heads/gone"
    ]
    moved = {ref: "f" * 40 for ref in facts["refs"]}
    assert compare_refs(moved, restored) == [
        "2 refs point elsewhere: refs/heads/main, refs/tags/v1"
    ]


def test_a_corrupted_bundle_fails_its_check(tmp_path: Path) -> None:
    bundle = _repo(tmp_path)
    data = bytearray(bundle.read_bytes())
    data[-30] ^= 0xFF  # inside the pack
    bundle.write_bytes(bytes(data))
    assert bundle_refs(bundle)  # the header still reads
    with pytest.raises(DrillError, match="git"):
        clone_and_check(bundle, tmp_path / "clone")


def test_redis_compares_the_rdb_hash_and_the_keys_loaded() -> None:
    facts = {"sha256": "ab" * 32, "keys": 10, "expires": 2}
    assert compare_redis(facts, "ab" * 32, 10) == []
    assert compare_redis(facts, "ab" * 32, 8) == []  # two with a TTL expired meanwhile
    assert compare_redis(facts, "cd" * 32, 7) == [
        "the RDB's SHA-256 is cdcdcdcdcdcd, abababababab when taken",
        "7 keys loaded, 10 when taken (2 with a TTL)",
    ]
    assert compare_redis(facts, "ab" * 32, 11) == ["11 keys loaded, 10 when taken (2 with a TTL)"]


def test_the_rdb_checkers_report_is_read() -> None:
    report = "[offset 187] \\o/ RDB looks OK! \\o/\n[info] 2 keys read\n[info] 1 expires\n"
    assert rdb_facts(report) == {"keys": 2, "expires": 1}
    with pytest.raises(DrillError, match="did not read"):
        rdb_facts("--- RDB ERROR DETECTED ---")


def test_the_roles_row_level_security_policies_name_are_read_from_the_dump() -> None:
    script = """
CREATE POLICY "my pol" ON s.notes TO "odd Role", app_shop USING ((t = 1));
CREATE POLICY p2 ON public.notes AS RESTRICTIVE FOR SELECT USING (true);
CREATE POLICY p3 ON "we ird"."t.x" FOR UPDATE TO "a""b" WITH CHECK ((x = 'TO nobody'));
CREATE TABLE t (note text DEFAULT 'CREATE POLICY x ON a.b TO intruder');
"""
    assert policy_roles(script) == {"odd Role", "app_shop", 'a"b'}
