"""Compiled modules checked against the runner stack, with real shared objects built by gcc."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from roost.builder import extcheck, stacks
from roost.builder.elfdeps import read_dynamic
from roost.builder.errors import BuildError
from roost.builder.extcheck import check_image, scan_tree

REPO = Path(__file__).resolve().parents[2]


def cc(out: Path, *args: str, source: str = "int f(void) { return 1; }\n") -> Path:
    """A shared object made by gcc from `source`, linked with `args`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / (out.name.replace(".", "_") + ".c")
    src.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *args], check=True)
    src.unlink()
    return out


@pytest.fixture
def absent(tmp_path: Path) -> Path:
    """libabsent.so.1: a real library no runner stack has, outside any image."""
    lib = tmp_path / "outside" / "libabsent.so.1"
    cc(lib, "-Wl,-soname,libabsent.so.1", source="int absent(void) { return 7; }\n")
    (lib.parent / "libabsent.so").symlink_to(lib.name)
    return lib


def uses_absent(out: Path, absent: Path, *flags: str) -> Path:
    return cc(
        out, f"-L{absent.parent}", "-labsent", *flags,
        source="int absent(void);\nint f(void) { return absent(); }\n",
    )  # fmt: skip


def test_modules_linking_only_the_runner_stack_pass(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    cc(site / "mathy" / "_m.cpython-311-x86_64-linux-gnu.so", "-lm")
    cc(site / "pg" / "_pq.so", "-lpq")  # libpq5 is in the runner stack
    cc(site / "x" / "_xml.so", "-lxml2")
    (site / "ld_script.so").write_text("/* GNU ld script */ GROUP ( libc.so.6 )\n")
    found = scan_tree(venv, "venv")
    assert found.problems == [] and found.objects == 3


def test_a_library_the_runner_stack_lacks_is_named_with_the_module(
    tmp_path: Path, absent: Path
) -> None:
    venv = tmp_path / "venv"
    uses_absent(venv / "lib" / "pkg" / "_x.so", absent)
    found = scan_tree(venv, "venv")
    assert found.problems == [
        "venv/lib/pkg/_x.so needs libabsent.so.1, which the runner stack does not have"
    ]


@pytest.mark.parametrize("dtags", ["--enable-new-dtags", "--disable-new-dtags"])
def test_a_library_carried_in_the_image_through_origin_resolves(
    tmp_path: Path, absent: Path, dtags: str
) -> None:
    """manylinux style: pkg.libs/ beside the package, found through $ORIGIN
    (RUNPATH with new dtags, RPATH with old ones)."""
    site = tmp_path / "venv" / "site-packages"
    (site / "pkg.libs").mkdir(parents=True)
    shutil.copy(absent, site / "pkg.libs" / absent.name)
    mod = uses_absent(
        site / "pkg" / "_x.so", absent, f"-Wl,{dtags}", "-Wl,-rpath,$ORIGIN/../pkg.libs"
    )
    info = read_dynamic(mod.open("rb"), mod.stat().st_size)
    assert info is not None
    assert (info.runpath if dtags == "--enable-new-dtags" else info.rpath) == (
        "$ORIGIN/../pkg.libs",
    )
    found = scan_tree(tmp_path / "venv", "venv")
    assert found.problems == [] and found.carried == 1 and found.objects == 2


@pytest.mark.parametrize(
    "rpath",
    [
        "ABSOLUTE",  # the builder's directory, where the library is: not on a runner
        "$ORIGIN/../../../outside",  # leads out of the tree
    ],
)
def test_a_search_path_outside_the_image_counts_for_nothing(
    tmp_path: Path, absent: Path, rpath: str
) -> None:
    rpath = str(absent.parent) if rpath == "ABSOLUTE" else rpath
    uses_absent(tmp_path / "venv" / "pkg" / "_x.so", absent, f"-Wl,-rpath,{rpath}")
    found = scan_tree(tmp_path / "venv", "venv")
    assert found.problems == [
        "venv/pkg/_x.so needs libabsent.so.1, which the runner stack does not have"
    ]


def test_a_broken_shared_object_is_named(tmp_path: Path) -> None:
    good = cc(tmp_path / "good.so", "-lm")
    tree = tmp_path / "app"
    tree.mkdir()
    (tree / "cut.so").write_bytes(good.read_bytes()[:100])
    (tree / "link.so").symlink_to("/etc/passwd")  # links are not followed
    found = scan_tree(tree, "app")
    assert len(found.problems) == 1 and found.problems[0].startswith(
        "app/cut.so is not a loadable shared object:"
    )


@pytest.mark.parametrize(
    "lib", ["libxslt.so.1", "libpq.so.5", "libssl.so.3", "libxml2.so.2", "libstdc++.so.6"]
)
def test_the_parser_reads_what_readelf_reads(lib: str) -> None:
    path = Path(_ldconfig()[lib])
    out = subprocess.run(["readelf", "-d", "-W", str(path)], capture_output=True, text=True)
    needed = tuple(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out.stdout))
    runpath = re.findall(r"\((?:RUNPATH)\)\s+Library runpath: \[(.+?)\]", out.stdout)
    with path.open("rb") as f:
        info = read_dynamic(f, path.stat().st_size)
    assert info is not None and needed and info.needed == needed
    assert list(info.runpath) == [p for r in runpath for p in r.split(":")]


async def test_the_step_fails_with_the_first_problem_and_logs_them_all(
    tmp_path: Path, absent: Path
) -> None:
    uses_absent(tmp_path / "venv" / "a.so", absent)
    uses_absent(tmp_path / "venv" / "b.so", absent)
    cc(tmp_path / "app" / "ok.so", "-lz")
    lines: list[str] = []
    with pytest.raises(BuildError) as err:
        await check_image([("venv", tmp_path / "venv"), ("app", tmp_path / "app")], lines.append)
    assert str(err.value) == (
        "venv/a.so needs libabsent.so.1, which the runner stack does not have (and 1 more)"
    )
    assert sum("needs libabsent.so.1" in ln for ln in lines) == 2
    lines.clear()
    await check_image([("app", tmp_path / "app")], lines.append)
    assert lines == ["       1 shared objects load on the runner stack"]


async def test_a_tree_scanned_early_is_not_scanned_again_and_its_problems_count(
    tmp_path: Path, absent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build scans a fresh venv while its bytecode compiles (EarlyScan)."""
    uses_absent(tmp_path / "venv" / "a.so", absent)
    cc(tmp_path / "app" / "ok.so", "-lz")
    scanned: list[str] = []

    def counting(root: Path, label: str) -> extcheck.Scan:
        scanned.append(label)
        return real(root, label)

    real = extcheck.scan_tree
    monkeypatch.setattr(extcheck, "scan_tree", counting)
    early = extcheck.EarlyScan()
    await early.close()  # nothing started: nothing to wait for
    early.start(tmp_path / "venv", "venv")
    early.start(tmp_path / "venv", "venv")  # started once
    lines: list[str] = []
    trees = [("venv", tmp_path / "venv"), ("app", tmp_path / "app")]
    with pytest.raises(BuildError, match=r"^venv/a.so needs libabsent.so.1"):
        await check_image(trees, lines.append, early)
    assert scanned == ["venv", "app"]
    await early.close()
    (tmp_path / "venv" / "a.so").unlink()
    fresh = extcheck.EarlyScan()
    fresh.start(tmp_path / "venv", "venv")
    await fresh.close()  # a build that failed before its extensions step
    lines.clear()
    await check_image(trees, lines.append, fresh)
    assert lines == ["       1 shared objects load on the runner stack"]


async def test_a_layer_that_passed_is_not_scanned_again_one_that_failed_is(
    tmp_path: Path, absent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reused dependency layer (a code-only deploy) keeps its verdict, for this check
    and this runner stack only; the checkout is scanned every time."""
    layer, app = tmp_path / "layer", tmp_path / "app"
    cc(layer / "venv" / "ok.so", "-lz")
    cc(app / "mine.so", "-lz")
    scanned: list[str] = []
    real = extcheck.scan_tree
    monkeypatch.setattr(
        extcheck, "scan_tree", lambda root, label: scanned.append(label) or real(root, label)
    )
    trees = [("venv", layer / "venv"), ("app", app)]

    async def step() -> list[str]:
        lines: list[str] = []
        early = extcheck.EarlyScan()
        try:
            await extcheck.check_layer_and_code(trees, lines.append, early, layer, "venv")
        finally:
            await early.close()
        return lines

    assert not extcheck.passed(layer)
    await step()
    assert scanned == ["venv", "app"] and extcheck.passed(layer)
    scanned.clear()
    assert "venv not scanned again" in (await step())[0] and scanned == ["app"]
    # Another runner stack (a builder upgrade): the verdict no longer holds.
    monkeypatch.setattr(extcheck, "RUNNER_SONAMES", extcheck.RUNNER_SONAMES | {"libnew.so.1"})
    assert not extcheck.passed(layer)
    scanned.clear()
    await step()
    assert scanned == ["venv", "app"] and extcheck.passed(layer)
    # A layer that fails records nothing and fails again.
    (layer / extcheck.PASSED).unlink()
    uses_absent(layer / "venv" / "bad.so", absent)
    for _ in range(2):
        scanned.clear()
        with pytest.raises(BuildError, match=r"needs libabsent\.so\.1"):
            await step()
        assert scanned == ["venv", "app"] and not extcheck.passed(layer)


def _ldconfig() -> dict[str, str]:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^\s+(\S+) \(libc6,x86-64[^)]*\) => (\S+)$", out, re.M))


def test_this_host_has_the_runner_stack_it_declares() -> None:
    """scripts/install installs it; a soname declared but absent would pass
    builds whose modules then fail on the runner."""
    have = _ldconfig()
    declared = stacks.RUNNER_SONAMES - {"ld-linux-aarch64.so.1"}
    assert sorted(declared - have.keys()) == []


def test_this_host_has_the_build_stack_it_declares() -> None:
    missing = stacks.missing_build_stack(
        "/usr/bin/python3.11", "3.11", which=shutil.which, exists=Path.exists
    )
    assert missing == []


def test_what_a_bare_host_lacks_is_named_with_its_package() -> None:
    missing = stacks.missing_build_stack(
        "/opt/py/bin/python3.12", "3.12", which=lambda _: None, exists=lambda _: False
    )
    assert "a C compiler (build-essential)" in missing
    assert "libpq headers (libpq-dev)" in missing
    assert (
        missing[-1] == "Python 3.12 headers, /opt/py/include/python3.12/Python.h (python3.12-dev)"
    )


def test_scripts_install_installs_both_stacks() -> None:
    text = (REPO / "scripts" / "install").read_text()
    listed = re.search(r"^OS_PACKAGES=\((.*?)\)", text, re.M | re.S)
    assert listed is not None
    packages = set(listed.group(1).split())
    assert sorted({*stacks.BUILD_STACK_PACKAGES, *stacks.RUNNER_STACK} - packages) == []
