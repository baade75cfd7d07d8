"""Untrusted source: uploaded tarballs and repository URLs.

Tarballs are never handed to tarfile: on this Python (3.11.7) its "data" filter
trusts os.path.realpath, which gives up on links that expand past PATH_MAX
(CVE-2025-4517), and it reads pax headers whole into memory. Instead one small
streaming reader walks the 512-byte header blocks with bounded memory, and one
validator keeps a virtual tree of the entries seen so far: the API checks an
upload with it before answering 202, and the worker's extractor runs it again
while it writes each entry through directory file descriptors that never follow
a link.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

BLOCK = 512
CHUNK = 64 * 1024
# pax ('x', 'g') and GNU long-name ('L', 'K') headers are read into memory, so
# they are refused above this size before a byte of their body is read.
MAX_META_HEADER = 8 * 1024
MAX_PATH = 4095
MAX_COMPONENT = 255


class UnsafeSource(ValueError):
    """The upload or URL is refused; the message says which entry and why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_uncompressed_bytes: int
    max_entries: int


class _TooBig(UnsafeSource):
    def __init__(self, limit: int):
        super().__init__(f"the source unpacks to more than {limit} bytes", status=413)


class _Unpacked:
    """The archive's bytes after decompression (gzip, bzip2, xz or none), read
    in bounded chunks; more than `limit` bytes in all is refused."""

    def __init__(self, raw: BinaryIO, limit: int):
        self.raw = raw
        self.limit = limit
        self.total = 0
        self.buffer = b""
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            self.kind = "gz"
        elif magic.startswith(b"BZh"):
            self.kind = "bz2"
        elif magic.startswith(b"\xfd7zXZ\x00"):
            self.kind = "xz"
        else:
            self.kind = "tar"
        self.decoder = self._new_decoder()
        self.pending = b""  # compressed input not yet given to the decoder
        self.ended = False

    def _new_decoder(self):
        if self.kind == "gz":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.kind == "bz2":
            return bz2.BZ2Decompressor()
        if self.kind == "xz":
            return lzma.LZMADecompressor()
        return None

    def _more(self) -> bytes:
        """Up to CHUNK more unpacked bytes; b"" at the end of the input."""
        if self.decoder is None:
            return self.raw.read(CHUNK)
        while True:
            if self.kind == "gz":
                data = self.decoder.unconsumed_tail or self.pending or self.raw.read(CHUNK)
                self.pending = b""
                if not data:
                    return b""
                out = self.decoder.decompress(data, CHUNK)
                if self.decoder.eof:
                    # A further gzip member may follow (as `cat a.gz b.gz`).
                    rest = self.decoder.unused_data
                    self.decoder = self._new_decoder()
                    self.pending = rest
            else:
                if self.decoder.eof:
                    return b""
                data = b""
                if self.decoder.needs_input:
                    data = self.raw.read(CHUNK)
                    if not data:
                        raise UnsafeSource("not a readable .tar or .tar.gz file: the compressed stream is truncated")
                out = self.decoder.decompress(data, CHUNK)
            if out:
                return out

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes, or fewer only at the end of the input."""
        while len(self.buffer) < size:
            more = self._more()
            if not more:
                break
            self.total += len(more)
            if self.total > self.limit:
                raise _TooBig(self.limit)
            self.buffer += more
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def chunks(self, size: int) -> Iterator[bytes]:
        """`size` bytes in pieces of at most CHUNK."""
        while size > 0:
            data = self.read(min(size, CHUNK))
            if not data:
                raise UnsafeSource("not a readable .tar or .tar.gz file: an entry is cut short")
            size -= len(data)
            yield data


@dataclass
class Entry:
    name: str  # as in the archive, for messages
    path: str  # normalised, relative, "" for the root
    kind: str  # "file", "dir", "symlink", "hardlink"
    size: int = 0
    link: str = ""
    mode: int = 0o644


_TYPES = {b"0": "file", b"\0": "file", b"7": "file", b"5": "dir", b"2": "symlink", b"1": "hardlink"}
_REFUSED = {
    b"3": "a device or FIFO (a character device)",
    b"4": "a device or FIFO (a block device)",
    b"6": "a device or FIFO (a FIFO)",
    b"S": "a GNU sparse file",
    b"V": "a volume label",
    b"M": "a multi-volume part",
}
_META = {b"x": "a pax extended header", b"g": "a pax global header", b"L": "a GNU long name", b"K": "a GNU long link name"}


def _label(raw: bytes) -> str:
    """An entry name for messages, readable whatever its bytes."""
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= 200 else text[:200] + "…"


def _number(field_: bytes, what: str, name: str) -> int:
    if field_[:1] in (b"\x80", b"\xff"):  # GNU base-256
        value = int.from_bytes(field_[1:], "big")
        if field_[0] == 0xFF:
            raise UnsafeSource(f"entry {name!r} has a negative {what}")
        return value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise UnsafeSource(f"not a readable .tar or .tar.gz file: entry {name!r} has a bad {what} field") from None


def _pax_records(data: bytes, name: str) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        if data[position:].strip(b"\0") == b"":
            break
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
        except ValueError:
            raise UnsafeSource(f"entry {name!r} has a malformed pax header") from None
        record = data[space + 1 : position + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise UnsafeSource(f"entry {name!r} has a malformed pax header")
        key, value = record[:-1].split(b"=", 1)
        records[key] = value
        position += length
    return records


def _decode(raw: bytes, label: str, what: str = "name") -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeSource(f"entry {label!r} has a {what} that is not UTF-8") from None
    if "\0" in text or any(ord(c) < 32 for c in text):
        raise UnsafeSource(f"entry {label!r} has a control character in its {what}")
    return text


class _Body:
    """An entry's data: read through `chunks()`, or skipped with its padding."""

    def __init__(self, stream: _Unpacked, size: int, stored: int):
        self.stream = stream
        self.left = size
        self.padding = stored - size

    def chunks(self) -> Iterator[bytes]:
        while self.left > 0:
            data = self.stream.read(min(self.left, CHUNK))
            if not data:
                raise UnsafeSource("not a readable .tar or .tar.gz file: an entry is cut short")
            self.left -= len(data)
            yield data

    def skip(self) -> None:
        for _ in self.chunks():
            pass
        if len(self.stream.read(self.padding)) < self.padding:
            raise UnsafeSource("not a readable .tar or .tar.gz file: an entry is cut short")


def _stored(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _checksum_ok(block: bytes, label: str) -> bool:
    expected = _number(block[148:156], "checksum", label)
    blanked = block[:148] + b" " * 8 + block[156:]
    return expected in (sum(blanked), sum(b - 256 if b > 127 else b for b in blanked))


def _entries(stream: _Unpacked) -> Iterator[tuple[Entry, _Body]]:
    """Each entry with its data, which the caller reads or leaves (then skipped)."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            raise UnsafeSource("not a readable .tar or .tar.gz file: it ends without an end-of-archive marker")
        if block == bytes(BLOCK):
            return
        raw_name = block[0:100].split(b"\0", 1)[0]
        label = _label(raw_name)
        if not _checksum_ok(block, label):
            raise UnsafeSource("not a readable .tar or .tar.gz file: a header's checksum is wrong")
        kind = block[156:157]
        size = _number(block[124:136], "size", label)
        if kind in _META:
            # Refused before its body is read: pax and long-name bodies are held in memory.
            if size > MAX_META_HEADER:
                raise UnsafeSource(
                    f"entry {label!r} is {_META[kind]} of {size} bytes; at most {MAX_META_HEADER} are allowed", status=413
                )
            body = stream.read(_stored(size))[:size]
            if len(body) < size:
                raise UnsafeSource("not a readable .tar or .tar.gz file: it ends inside a header")
            if kind == b"x":
                pax = _pax_records(body, label)
            elif kind == b"g":
                global_pax.update(_pax_records(body, label))
            elif kind == b"L":
                long_name = body.split(b"\0", 1)[0]
            else:
                long_link = body.split(b"\0", 1)[0]
            continue
        if block[257:263] == b"ustar\0" and block[345:500].strip(b"\0"):
            raw_name = block[345:500].split(b"\0", 1)[0] + b"/" + raw_name
        raw_link = block[157:257].split(b"\0", 1)[0]
        fields = {**global_pax, **pax}
        raw_name = fields.get(b"path", long_name or raw_name)
        raw_link = fields.get(b"linkpath", long_link or raw_link)
        pax, long_name, long_link = {}, None, None
        label = _label(raw_name)
        if any(key.startswith(b"GNU.sparse") for key in fields):
            raise UnsafeSource(f"entry {label!r} is a GNU sparse file")
        if b"size" in fields:
            try:
                size = int(fields[b"size"])
            except ValueError:
                raise UnsafeSource(f"entry {label!r} has a bad size in its pax header") from None
        if kind in _REFUSED:
            raise UnsafeSource(f"entry {label!r} is {_REFUSED[kind]}; only files, directories and links are allowed")
        if kind not in _TYPES:
            raise UnsafeSource(f"entry {label!r} has an unsupported type {kind.decode('latin-1')!r}")
        name = _decode(raw_name, label)
        entry = Entry(name=name, path=_normalised(name), kind=_TYPES[kind], mode=_number(block[100:108], "mode", label))
        if entry.kind == "file":
            entry.size = size
        elif entry.kind in ("symlink", "hardlink"):
            entry.link = _decode(raw_link, label, "link target")
        body = _Body(stream, size if entry.kind == "file" else 0, _stored(size))
        yield entry, body
        body.skip()


def _normalised(name: str) -> str:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeSource(f"entry {name!r} has an absolute path")
    if "\\" in name:
        raise UnsafeSource(f"entry {name!r} contains a backslash")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeSource(f"entry {name!r} climbs out of the source tree with '..'")
    path = "/".join(parts)
    if len(path.encode()) > MAX_PATH or any(len(p.encode()) > MAX_COMPONENT for p in parts):
        raise UnsafeSource(f"entry {_label(name.encode())!r} has a path over {MAX_PATH} bytes or a name over {MAX_COMPONENT}")
    return path


@dataclass
class _Tree:
    """The tree the archive describes, from the entries seen so far (never the
    host's filesystem). Keys are case-folded: names that differ only in case are
    one path, as on a case-insensitive filesystem."""

    limits: Limits
    kinds: dict[str, str] = field(default_factory=lambda: {"": "dir"})
    exact: dict[str, str] = field(default_factory=lambda: {"": ""})
    # Each path a symlink's target walks through, with that link's name: a
    # symlink put there later would make the first one a chain.
    crossed: dict[str, str] = field(default_factory=dict)
    count: int = 0
    total: int = 0

    def add(self, entry: Entry) -> None:
        """Record the entry, or refuse it with the reason."""
        self.count += 1
        if self.count > self.limits.max_entries:
            raise UnsafeSource(f"more than {self.limits.max_entries} entries", status=413)
        if not entry.path:
            if entry.kind != "dir":
                raise UnsafeSource(f"entry {entry.name!r} would replace the root of the source tree")
            return
        key = entry.path.casefold()
        parents = entry.path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            exact = "/".join(parents[:depth])
            kind = self.kinds.setdefault(exact.casefold(), "dir")
            self.exact.setdefault(exact.casefold(), exact)
            if kind != "dir":
                raise UnsafeSource(f"entry {entry.name!r} is written through the {kind} {self.exact[exact.casefold()]!r}")
        if key in self.kinds:
            if not (entry.kind == "dir" and self.kinds[key] == "dir" and self.exact[key] == entry.path):
                raise UnsafeSource(f"entry {entry.name!r} duplicates {self.exact[key]!r}")
            return
        if entry.kind == "symlink":
            self._check_symlink(entry, key)
        elif entry.kind == "hardlink":
            self._check_hardlink(entry)
        elif entry.kind == "file":
            self.total += entry.size
            if self.total > self.limits.max_uncompressed_bytes:
                raise UnsafeSource(f"the source unpacks to more than {self.limits.max_uncompressed_bytes} bytes", status=413)
        self.kinds[key] = "file" if entry.kind == "hardlink" else entry.kind
        self.exact[key] = entry.path

    def _check_symlink(self, entry: Entry, key: str) -> None:
        target = entry.link
        if not target:
            raise UnsafeSource(f"symlink {entry.name!r} has an empty target")
        if target.startswith("/"):
            raise UnsafeSource(f"symlink {entry.name!r} points to the absolute path {target!r}")
        if "\\" in target or len(target.encode()) > MAX_PATH:
            raise UnsafeSource(f"symlink {entry.name!r} has a target with a backslash or over {MAX_PATH} bytes")
        if key in self.crossed:
            raise UnsafeSource(
                f"symlink {entry.name!r} stands where the symlink {self.crossed[key]!r} points through; link chains are refused"
            )
        # Lexical resolution equals the kernel's only while no step is a link:
        # so every step must be a directory of the tree or not exist yet (and
        # then may never become a link, see `crossed`).
        parts = key.split("/")[:-1]
        walked: list[str] = []
        for part in target.casefold().split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise UnsafeSource(f"symlink {entry.name!r} points outside the source tree ({target!r})")
                parts.pop()
                continue
            parts.append(part)
            here = "/".join(parts)
            if here == key:
                raise UnsafeSource(f"symlink {entry.name!r} points through itself")
            if self.kinds.get(here) == "symlink":
                raise UnsafeSource(f"symlink {entry.name!r} points through the symlink {self.exact[here]!r}; link chains are refused")
            walked.append(here)
        for here in walked:
            self.crossed.setdefault(here, entry.name)

    def _check_hardlink(self, entry: Entry) -> None:
        target = _normalised(entry.link).casefold()
        if self.kinds.get(target) != "file":
            raise UnsafeSource(f"hard link {entry.name!r} points to {entry.link!r}, not a file of the tree")


def _open(path: Path, limits: Limits) -> tuple[BinaryIO, _Unpacked]:
    raw = path.open("rb")
    # Headers and padding come on top of the files' bytes.
    overhead = (limits.max_entries + 2) * 3 * BLOCK
    return raw, _Unpacked(raw, limits.max_uncompressed_bytes + overhead)


def _walk(path: Path, limits: Limits) -> Iterator[tuple[Entry, _Body]]:
    """Every entry, validated against the tree of those before it."""
    tree = _Tree(limits)
    raw, stream = _open(path, limits)
    with raw:
        try:
            for entry, body in _entries(stream):
                tree.add(entry)
                yield entry, body
        except (OSError, zlib.error, lzma.LZMAError, EOFError) as exc:
            raise UnsafeSource(f"not a readable .tar or .tar.gz file: {exc.__class__.__name__}") from None
        except _TooBig as exc:
            raise UnsafeSource(str(exc), status=413) from None
    if tree.count == 0:
        raise UnsafeSource("the archive is empty")


def check_tarball(path: Path, limits: Limits) -> int:
    """Validate every entry with bounded memory; return the number of entries. Raises UnsafeSource."""
    count = 0
    for _entry, _body in _walk(path, limits):
        count += 1
    return count


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _file_mode(mode: int) -> int:
    # No setuid, setgid, sticky or write bits for others: executables stay executable.
    return 0o755 if mode & 0o111 else 0o644


class _Writer:
    """Writes entries below one directory, opening every path component
    relative to its parent's descriptor with O_NOFOLLOW: a link in the way
    makes the open fail instead of leading out."""

    def __init__(self, root: Path):
        self.root = os.open(root, _DIR_FLAGS)

    def close(self) -> None:
        os.close(self.root)

    def _parent(self, entry: Entry, parts: list[str], create: bool) -> int:
        fd = os.dup(self.root)
        try:
            for part in parts:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            return fd
        except OSError as exc:
            os.close(fd)
            raise UnsafeSource(f"entry {entry.name!r} cannot be written inside the workspace ({exc.strerror})") from None

    def write(self, entry: Entry, body: _Body) -> None:
        *parents, leaf = entry.path.split("/")
        if not leaf:
            return
        parent = self._parent(entry, parents, create=True)
        try:
            if entry.kind == "dir":
                try:
                    os.mkdir(leaf, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass
                fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
                os.fchmod(fd, 0o755)
                os.close(fd)
            elif entry.kind == "file":
                fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
                try:
                    for chunk in body.chunks():
                        os.write(fd, chunk)
                    os.fchmod(fd, _file_mode(entry.mode))
                finally:
                    os.close(fd)
            elif entry.kind == "symlink":
                os.symlink(entry.link, leaf, dir_fd=parent)
            else:
                *source_parents, source_leaf = _normalised(entry.link).split("/")
                source = self._parent(entry, source_parents, create=False)
                try:
                    os.link(source_leaf, leaf, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
                finally:
                    os.close(source)
        except UnsafeSource:
            raise
        except OSError as exc:
            raise UnsafeSource(f"entry {entry.name!r} cannot be written inside the workspace ({exc.strerror})") from None
        finally:
            os.close(parent)


def extract(path: Path, workspace: Path, limits: Limits) -> None:
    """Check the whole archive, then write it entry by entry into `workspace`
    (created here; it must not exist). Nothing outside it is ever touched."""
    check_tarball(path, limits)
    workspace.mkdir(mode=0o755)
    writer = _Writer(workspace)
    try:
        for entry, body in _walk(path, limits):
            writer.write(entry, body)
    finally:
        writer.close()


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
