"""Hostile tarballs, shared by the unit tests of the checker and extractor and
the API tests of uploads. Each builder returns (archive bytes, the entry the
refusal must name, words of the reason, HTTP status); `escape_to` is the
target relative to the directory the archive is unpacked in, e.g. "../../x"."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

BLOCK = 512


def tar_bytes(entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None, compress: bool = True) -> bytes:
    data = data or {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as archive:
        for info in entries:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            archive.addfile(info, io.BytesIO(body) if body is not None else None)
    return buffer.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname, entry.mode = kind, link, mode
    return entry


def raw_header(name: bytes, kind: bytes, size: int) -> bytes:
    """One ustar header block, written by hand so that its size can lie about
    (or precede) a body far larger than anything tarfile would build in memory."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def gzip_of_header_bomb(kind: bytes, size: int) -> bytes:
    """A gzip whose first header says `size` bytes of metadata follow, and they do
    (zeros compress about 1000:1): tarfile reads the whole body into memory."""
    out = io.BytesIO()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out.write(compressor.compress(raw_header(b"././@LongLink" if kind in (b"L", b"K") else b"././@PaxHeader", kind, size)))
    zeros = bytes(1024 * 1024)
    for _ in range(size // len(zeros)):
        out.write(compressor.compress(zeros))
    out.write(compressor.compress(bytes(size % len(zeros) + 2 * BLOCK)))
    out.write(compressor.flush())
    return out.getvalue()


def pax_bomb(size: int = 256 * 1024 * 1024) -> tuple[bytes, str, str, int]:
    return gzip_of_header_bomb(b"x", size), "././@PaxHeader", "pax extended header", 413


def gnu_long_name_bomb(size: int = 64 * 1024 * 1024) -> tuple[bytes, str, str, int]:
    return gzip_of_header_bomb(b"L", size), "././@LongLink", "GNU long name", 413


def gzip_bomb(size: int) -> tuple[bytes, str, str, int]:
    """One file whose header says `size` bytes of zeros; the gzip is tiny."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as stream:
        stream.write(raw_header(b"zeros", b"0", size))
        zeros = bytes(1024 * 1024)
        for _ in range(size // len(zeros)):
            stream.write(zeros)
        stream.write(bytes(size % len(zeros) + 3 * BLOCK))
    return out.getvalue(), "zeros", "unpacks to more than", 413


def realpath_overflow(escape_to: str) -> tuple[bytes, str, str, int]:
    """The CVE-2025-4517 pattern: each of 16 nested directories with a 247-byte
    name gets a one-letter symlink to it, so `a/b/…/p` expands past PATH_MAX
    and os.path.realpath stops resolving it. A link below it points back to
    the top, so `escape -> <that link>/../../x` is deep inside the tree as
    far as realpath can tell, yet two levels above it on disk."""
    component = "d" * 247
    steps = "abcdefghijklmnop"
    entries, path = [], ""
    for step in steps:
        entries.append(info(f"{path}{component}", tarfile.DIRTYPE, mode=0o755))
        entries.append(info(f"{path}{step}", tarfile.SYMTYPE, component))
        path += component + "/"
    long_link = "/".join(steps) + "/" + "l" * 254
    entries.append(info(long_link, tarfile.SYMTYPE, "../" * len(steps)))
    entries.append(info("escape", tarfile.SYMTYPE, long_link + "/" + escape_to))
    entries.append(info("escape/pwned", mode=0o644))
    return tar_bytes(entries, {"escape/pwned": b"pwned\n"}), long_link, "is written through the symlink 'a'", 400


def _climb(escape_to: str) -> str:
    """`s1/s1/../../<rest>`: inside the tree on paper (the s1 and .. cancel out),
    but with `s1 -> .` each `..` climbs one level above the workspace."""
    levels = escape_to.count("../")
    return "s1/" * levels + "../" * levels + escape_to.replace("../", "")


def link_chain(escape_to: str) -> tuple[bytes, str, str, int]:
    """`s1 -> .` then `up -> s1/s1/../../<escape_to>`."""
    climb = _climb(escape_to)
    entries = [info("s1", tarfile.SYMTYPE, "."), info("up", tarfile.SYMTYPE, climb), info("up/pwned")]
    return tar_bytes(entries, {"up/pwned": b"pwned\n"}), "up", "points through the symlink 's1'", 400


def link_chain_reversed(escape_to: str) -> tuple[bytes, str, str, int]:
    """The same chain with the link that makes it a chain coming second."""
    climb = _climb(escape_to)
    entries = [info("up", tarfile.SYMTYPE, climb), info("s1", tarfile.SYMTYPE, "."), info("up/pwned")]
    return tar_bytes(entries, {"up/pwned": b"pwned\n"}), "s1", "link chains are refused", 400


def write_through_link(escape_to: str) -> tuple[bytes, str, str, int]:
    """A link to a directory of the tree is fine; writing a file through it is not."""
    entries = [info("real", tarfile.DIRTYPE, mode=0o755), info("alias", tarfile.SYMTYPE, "real"), info("alias/pwned")]
    return tar_bytes(entries, {"alias/pwned": b"pwned\n"}), "alias/pwned", "written through the symlink 'alias'", 400


def hardlink_to_symlink(escape_to: str) -> tuple[bytes, str, str, int]:
    """A hard link to a symlink copies the link, which then resolves from elsewhere."""
    entries = [info("deep", tarfile.DIRTYPE, mode=0o755), info("deep/up", tarfile.SYMTYPE, ".."), info("top", tarfile.LNKTYPE, "deep/up")]
    return tar_bytes(entries), "top", "not a file of the tree", 400


HOSTILE = {
    "realpath-overflow": realpath_overflow,
    "link-chain": link_chain,
    "link-chain-reversed": link_chain_reversed,
    "write-through-link": write_through_link,
    "hardlink-to-symlink": hardlink_to_symlink,
}
