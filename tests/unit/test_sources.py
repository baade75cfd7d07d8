"""Untrusted tarballs and repository URLs are refused with the entry and the reason."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from conveyor.builds import sources
from conveyor.domain.workload import parse_procfile
from tests.support import hostile_archives as hostile

LIMITS = sources.Limits(max_uncompressed_bytes=1024 * 1024, max_entries=50)


def make_tar(path: Path, entries: list[tuple[str, dict]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, spec in entries:
            info = tarfile.TarInfo(name)
            data = spec.get("data", b"")
            info.type = spec.get("type", tarfile.REGTYPE)
            info.linkname = spec.get("link", "")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            if "size" in spec:
                info.size = spec["size"]
                archive.addfile(info, io.BytesIO(b"\0" * spec["size"]))
            else:
                archive.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


GOOD = [("Dockerfile", {"data": b"FROM scratch\n"}), ("src/app.py", {"data": b"print(1)\n"}), ("src/link", {"type": tarfile.SYMTYPE, "link": "app.py"})]


def test_a_clean_tarball_is_extracted_into_the_workspace_only(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", GOOD)
    workspace = tmp_path / "ws"
    sources.extract(archive, workspace, LIMITS)
    assert (workspace / "src" / "app.py").read_text() == "print(1)\n"
    assert (workspace / "src" / "link").resolve() == (workspace / "src" / "app.py").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar.gz", "ws"]


@pytest.mark.parametrize(
    ("entries", "words", "status"),
    [
        ([("../evil", {"data": b"x"})], "climbs out", 400),
        ([("a/../../evil", {"data": b"x"})], "climbs out", 400),
        ([("/etc/evil", {"data": b"x"})], "absolute path", 400),
        ([("link", {"type": tarfile.SYMTYPE, "link": "/etc/passwd"})], "absolute path", 400),
        ([("a/link", {"type": tarfile.SYMTYPE, "link": "../../outside"})], "outside the source tree", 400),
        ([("hard", {"type": tarfile.LNKTYPE, "link": "/etc/passwd"})], "absolute path", 400),
        ([("hard", {"type": tarfile.LNKTYPE, "link": "missing"})], "not a file of the tree", 400),
        ([("dev", {"type": tarfile.CHRTYPE})], "device", 400),
        ([("fifo", {"type": tarfile.FIFOTYPE})], "device or FIFO", 400),
        ([("App.py", {"data": b"1"}), ("app.py", {"data": b"2"})], "duplicates", 400),
        ([("a/b", {"data": b"1"}), ("a//b", {"data": b"2"})], "duplicates", 400),
        ([("big", {"size": 2 * 1024 * 1024})], "unpacks to more than", 413),
        ([(f"f{i}", {"data": b"x"}) for i in range(60)], "more than 50 entries", 413),
    ],
)
def test_malicious_tarballs_are_refused_and_nothing_is_written(tmp_path, entries, words, status):
    archive = make_tar(tmp_path / "bad.tar.gz", entries)
    workspace = tmp_path / "ws"
    with pytest.raises(sources.UnsafeSource) as refused:
        sources.extract(archive, workspace, LIMITS)
    assert words in str(refused.value) and refused.value.status == status
    assert not workspace.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]


def test_a_gzip_bomb_is_refused_by_its_unpacked_size(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as out:
        info = tarfile.TarInfo("zeros")
        info.size = 64 * 1024 * 1024
        out.addfile(info, io.BytesIO(bytes(info.size)))
    assert archive.stat().st_size < 200 * 1024
    with pytest.raises(sources.UnsafeSource) as refused:
        sources.check_tarball(archive, LIMITS)
    assert refused.value.status == 413


@pytest.fixture
def sentinel(tmp_path):
    """A directory outside the workspace that hostile archives aim at; it must stay empty."""
    target = tmp_path / "sentinel"
    target.mkdir()
    yield target
    assert list(target.iterdir()) == [], "something was written outside the workspace"


@pytest.mark.parametrize("name", sorted(hostile.HOSTILE))
def test_hostile_links_are_refused_by_the_check_and_by_extract(tmp_path, sentinel, name):
    # The workspace sits two levels below tmp_path, as src/ does in the builder's workspace.
    workspace = tmp_path / "build" / "src"
    workspace.parent.mkdir()
    data, entry, words, status = hostile.HOSTILE[name](os.path.relpath(sentinel, workspace))
    archive = tmp_path / "hostile.tar.gz"
    archive.write_bytes(data)
    with pytest.raises(sources.UnsafeSource) as refused:
        sources.check_tarball(archive, LIMITS)
    assert repr(entry) in str(refused.value) and words in str(refused.value) and refused.value.status == status
    with pytest.raises(sources.UnsafeSource):
        sources.extract(archive, workspace, LIMITS)
    assert not workspace.exists()


@pytest.mark.parametrize("bomb", [hostile.pax_bomb, hostile.gnu_long_name_bomb, hostile.gzip_bomb])
def test_header_and_gzip_bombs_are_refused_while_streaming_with_bounded_memory(tmp_path, bomb):
    data, entry, words, status = bomb(64 * 1024 * 1024)
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(data)
    assert archive.stat().st_size < 200 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(sources.UnsafeSource) as refused:
            sources.check_tarball(archive, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == status and words in str(refused.value)
    if bomb is not hostile.gzip_bomb:
        # A header bomb is named by its entry; a gzip bomb by the limit it crossed.
        assert repr(entry) in str(refused.value)
    assert peak < 2 * 1024 * 1024, f"the check held {peak} bytes"


def test_the_extractor_never_follows_a_link_already_in_the_workspace(tmp_path, sentinel):
    """The second line of defence on its own: even if a link the check should
    have refused were in place, every open is relative to its parent's
    descriptor with O_NOFOLLOW, so writes through it fail."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "out").symlink_to(sentinel)
    (workspace / "inner").mkdir()
    (workspace / "alias").symlink_to("inner")
    (sentinel / "secret").write_text("x")
    writer = sources._Writer(workspace)
    body = sources._Body(sources._Unpacked(io.BytesIO(b"pwned\n"), 1024), 6, 6)
    try:
        for entry in (
            sources.Entry(name="out/pwned", path="out/pwned", kind="file", size=6),
            sources.Entry(name="alias/pwned", path="alias/pwned", kind="file", size=6),
            sources.Entry(name="out/deeper/x", path="out/deeper/x", kind="dir"),
            sources.Entry(name="steal", path="steal", kind="hardlink", link="out/secret"),
            sources.Entry(name="out", path="out", kind="file", size=6),
        ):
            with pytest.raises(sources.UnsafeSource, match=repr(entry.name)):
                writer.write(entry, body)
    finally:
        writer.close()
        (sentinel / "secret").unlink()
    assert sorted(p.name for p in workspace.iterdir()) == ["alias", "inner", "out"]
    assert list((workspace / "inner").iterdir()) == []


def test_extraction_keeps_modes_sane_and_long_names_intact(tmp_path):
    long_dir = "/".join(["p" * 200] * 3)
    entries = [
        hostile.info("setuid-tool", mode=0o4755),
        hostile.info("world-writable", mode=0o666),
        hostile.info("private", mode=0o600),
        hostile.info(f"{long_dir}/file.txt"),
        hostile.info("same", tarfile.LNKTYPE, f"{long_dir}/file.txt"),
        hostile.info("to-dir", tarfile.SYMTYPE, long_dir),
        hostile.info("sticky", tarfile.DIRTYPE, mode=0o1777),
    ]
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(hostile.tar_bytes(entries, {"setuid-tool": b"#!/bin/sh\n", "world-writable": b"w", "private": b"p", f"{long_dir}/file.txt": b"deep\n"}))
    workspace = tmp_path / "ws"
    sources.extract(archive, workspace, LIMITS)
    modes = {name: stat.S_IMODE(os.lstat(workspace / name).st_mode) for name in ("setuid-tool", "world-writable", "private", "sticky")}
    assert modes == {"setuid-tool": 0o755, "world-writable": 0o644, "private": 0o644, "sticky": 0o755}
    assert (workspace / "to-dir" / "file.txt").read_text() == "deep\n"
    assert os.lstat(workspace / "same").st_ino == os.lstat(workspace / long_dir / "file.txt").st_ino


def test_garbage_is_not_a_tarball(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(sources.UnsafeSource, match="not a readable"):
        sources.check_tarball(junk, LIMITS)


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://example.com/user/repo.git", ["https", "ssh"], True),
        ("ssh://git@example.com/repo.git", ["https", "ssh"], True),
        ("git@example.com:user/repo.git", ["https", "ssh"], True),
        ("file:///etc", ["https", "ssh"], False),
        ("git://127.0.0.1/repo.git", ["https", "ssh"], False),
        ("git://127.0.0.1/repo.git", ["https", "ssh", "git"], True),
        ("--upload-pack=touch /tmp/x", ["https", "ssh"], False),
        ("/local/path", ["https", "ssh"], False),
    ],
)
def test_repo_url_schemes(url, allowed, ok):
    if ok:
        assert sources.check_repo_url(url, allowed) == url
    else:
        with pytest.raises(sources.UnsafeSource):
            sources.check_repo_url(url, allowed)


def test_procfile_lines():
    assert parse_procfile("worker: x\nweb: httpd -f -p 8080\n") == {"worker": "x", "web": "httpd -f -p 8080"}
    assert parse_procfile("worker: x\n").get("web") is None
    # Not a process name, no command, a repeated name: left out (the first line counts).
    assert parse_procfile("Bad_Name: x\nempty:\n# comment\nclock: a\nclock: b\n") == {"clock": "a"}
    # Heroku's release phase is not a process (it would run in a loop): release_command is.
    assert parse_procfile("web: w\nrelease: ./migrate\n") == {"web": "w"}
