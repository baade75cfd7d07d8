"""Untrusted tarballs and repository URLs are refused with the entry and the reason."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from conveyor import sources

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


def test_procfile_web_line():
    assert sources.procfile_web("worker: x\nweb: httpd -f -p 8080\n") == "httpd -f -p 8080"
    assert sources.procfile_web("worker: x\n") is None
