"""`conveyor deploy PATH` packs a directory into the tar.gz that
`POST /apps/{id}/build` takes, leaving out what the project itself ignores:

- `.git/` always;
- what `.gitignore` files ignore (git's rules: each file speaks for its own
  directory and those below it, a deeper one overrides, `!` re-includes,
  nothing below an ignored directory comes back);
- what the root `.dockerignore` ignores (Docker's rules: patterns are paths
  from the root, `**` spans directories, `!` re-includes, the last match wins,
  a pattern that matches a directory takes everything below it).

The root `Dockerfile` is packed even when an ignore file names it: the build
needs it, as `docker build` does. Only files, directories and symlinks go in
(a socket or FIFO is skipped); the API checks the archive again.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pathspec import GitIgnoreSpec

ALWAYS_LEFT_OUT = {".git"}
ALWAYS_PACKED = {"Dockerfile"}


@dataclass
class DockerIgnore:
    """The patterns of a `.dockerignore`, as Docker matches them (moby/patternmatcher)."""

    rules: list[tuple[re.Pattern[str], bool]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        ignore = cls()
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return ignore
        for line in lines:
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            exclude = not pattern.startswith("!")
            pattern = os.path.normpath(pattern.removeprefix("!").strip()).lstrip("/")
            if pattern in ("", "."):
                continue
            ignore.rules.append((re.compile(_docker_regex(pattern)), exclude))
        return ignore

    @property
    def has_exceptions(self) -> bool:
        return any(not exclude for _, exclude in self.rules)

    def ignores(self, relative: str) -> bool:
        """Whether `relative` (a/b/c, from the root) is left out: the last pattern
        that matches it, or one of its parent directories, decides."""
        parents = relative.split("/")
        candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        ignored = False
        for regex, exclude in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                ignored = exclude
        return ignored


def _docker_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/`: zero or more directories
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _gitignore(folder: Path) -> GitIgnoreSpec | None:
    try:
        return GitIgnoreSpec.from_lines((folder / ".gitignore").read_text().splitlines())
    except FileNotFoundError:
        return None


def files_to_pack(root: Path) -> list[str]:
    """The paths (relative, `/`-separated, sorted) that the archive holds: files,
    symlinks, and directories (empty ones too, so the tree is as on disk)."""
    root = root.resolve()
    docker = DockerIgnore.read(root / ".dockerignore")
    chosen: list[str] = []

    def git_ignores(relative: str, is_dir: bool, specs: list[tuple[str, GitIgnoreSpec]]) -> bool:
        verdict = None
        for base, spec in specs:  # the root's first: a deeper file has the last word
            inner = relative[len(base) + 1 :] if base else relative
            result = spec.check_file(inner + "/" if is_dir else inner)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)

    def walk(folder: Path, relative: str, specs: list[tuple[str, GitIgnoreSpec]]) -> None:
        own = _gitignore(folder)
        if own is not None:
            specs = [*specs, (relative, own)]
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = f"{relative}/{entry.name}" if relative else entry.name
                if not relative and entry.name in ALWAYS_LEFT_OUT:
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                is_dir = stat.S_ISDIR(mode)
                if not (is_dir or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    continue
                if path not in ALWAYS_PACKED:
                    if git_ignores(path, is_dir, specs):
                        continue  # git never brings back what is below an ignored directory
                    if docker.ignores(path):
                        if is_dir and docker.has_exceptions:
                            walk(Path(entry.path), path, specs)  # Docker does: `!` may take a file back
                        continue
                chosen.append(path)
                if is_dir:
                    walk(Path(entry.path), path, specs)

    walk(root, "", [])
    return chosen


def pack(root: Path, out: BinaryIO) -> list[str]:
    """Write the tar.gz of `root` to `out`; return its members."""
    root = root.resolve()
    members = files_to_pack(root)
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = archive.gettarinfo(str(root / member), arcname=member)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with open(root / member, "rb") as data:
                    archive.addfile(info, data)
            else:
                archive.addfile(info)
    return members
