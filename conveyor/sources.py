"""Untrusted source: uploaded tarballs and repository URLs.

A tarball is checked entry by entry before anything is extracted; extraction
then uses tarfile's "data" filter as a second line of defence, into a fresh
workspace only.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class UnsafeSource(ValueError):
    """The upload or URL is refused; the message says which entry and why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_uncompressed_bytes: int
    max_entries: int


def _normalised(name: str) -> str:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeSource(f"entry {name!r} has an absolute path")
    if "\\" in name:
        raise UnsafeSource(f"entry {name!r} contains a backslash")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeSource(f"entry {name!r} climbs out of the source tree with '..'")
    return "/".join(parts)


def check_tarball(path: Path, limits: Limits) -> int:
    """Validate every entry; return the number of entries. Raises UnsafeSource."""
    seen: dict[str, str] = {}
    files: set[str] = set()
    total = 0
    count = 0
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                count += 1
                if count > limits.max_entries:
                    raise UnsafeSource(f"more than {limits.max_entries} entries", status=413)
                name = _normalised(member.name)
                if not name:
                    continue  # the root itself ("./")
                folded = name.casefold()
                if folded in seen and not (member.isdir() and seen[folded] == name):
                    raise UnsafeSource(f"entry {member.name!r} duplicates {seen[folded]!r}")
                seen[folded] = name
                if member.isdev() or member.isfifo():
                    raise UnsafeSource(f"entry {member.name!r} is a device or FIFO")
                if member.issym():
                    target = member.linkname
                    if target.startswith("/"):
                        raise UnsafeSource(f"symlink {member.name!r} points to the absolute path {target!r}")
                    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                    if resolved == ".." or resolved.startswith("../"):
                        raise UnsafeSource(f"symlink {member.name!r} points outside the source tree ({target!r})")
                elif member.islnk():
                    target = _normalised(member.linkname)
                    if target not in files:
                        raise UnsafeSource(f"hard link {member.name!r} points to {member.linkname!r}, not a file of the tree")
                elif member.isfile():
                    files.add(name)
                    total += member.size
                    if total > limits.max_uncompressed_bytes:
                        raise UnsafeSource(
                            f"the source unpacks to more than {limits.max_uncompressed_bytes} bytes", status=413
                        )
                elif not member.isdir():
                    raise UnsafeSource(f"entry {member.name!r} has an unsupported type")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeSource(f"not a readable .tar or .tar.gz file: {exc}") from exc
    if count == 0:
        raise UnsafeSource("the archive is empty")
    return count


def extract(path: Path, workspace: Path, limits: Limits) -> None:
    """Check, then extract into `workspace` (which must be empty)."""
    check_tarball(path, limits)
    workspace.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="r:*") as archive:
        archive.extractall(workspace, filter="data")


def check_repo_url(url: str, allowed_schemes: list[str]) -> str:
    """The URL if its scheme is one the operator allows (scp-like git@host:path is ssh)."""
    if not url or len(url) > 1024 or any(c.isspace() for c in url) or not url.isprintable():
        raise UnsafeSource("repo_url must be a URL of at most 1024 characters without spaces or control characters")
    if url.startswith("-"):
        raise UnsafeSource("repo_url must not start with '-'")
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if not scheme and "@" in url.split(":", 1)[0] and ":" in url:
        scheme = "ssh"
    if scheme not in allowed_schemes:
        # The message names the rule, not the scheme given: a refused value is never echoed.
        raise UnsafeSource(f"repo_url must use one of the allowed schemes: {', '.join(allowed_schemes)}")
    return url


def procfile_web(text: str) -> str | None:
    for line in text.splitlines():
        if line.strip().startswith("web:"):
            command = line.split(":", 1)[1].strip()
            return command or None
    return None
