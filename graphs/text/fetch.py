"""Fetch public-domain English text for perplexity and cache-compression evaluation.

    python -m graphs.text.fetch --out FILE [--source emma]

Sources (Debian packages, fetched with `apt-get download`, unpacked with `dpkg -x`, nothing installed):
  emma, mansfieldpark, northangerabbey, persuasion, prideprejudice, sensesensibility
      Jane Austen's novels from `r-cran-janeaustenr` (R data read with PyPI `rdata`, no R needed); the text
      is public domain. One line per printed line, blank lines kept, joined with "\\n".
  jargon
      The Jargon File 4.4.7 from `jargon-text` (public domain), used when the Austen package fails.
The text is cached under $XDG_CACHE_HOME/tqexport/text/ (default ~/.cache/tqexport/text/); later runs copy it.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from graphs.text.debian_package import DebianPackageError, download_deb, unpack_deb
from graphs.text.r_lazyload import RLazyLoadError, read_object

AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_DATA = Path("usr/lib/R/site-library/janeaustenr/data/Rdata")
AUSTEN_BOOKS = (
    "emma",
    "mansfieldpark",
    "northangerabbey",
    "persuasion",
    "prideprejudice",
    "sensesensibility",
)
JARGON_PACKAGE = "jargon-text"
JARGON_FILE = Path("usr/share/doc/jargon-text/jargon.txt.gz")
FALLBACK_SOURCE = "jargon"
SOURCES = (*AUSTEN_BOOKS, FALLBACK_SOURCE)


class TextFetchError(RuntimeError):
    """No source could produce the text."""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tqexport" / "text"


def read_austen_book(root: Path, book: str) -> str:
    """The novel `book` from an unpacked r-cran-janeaustenr tree at `root`, as plain text."""
    lines = read_object(root / AUSTEN_DATA, book)
    if getattr(lines, "ndim", 0) != 1 or len(lines) < 1000:
        raise RLazyLoadError(f"{book}: expected a long character vector, got {type(lines).__name__}")
    return "\n".join(str(line) for line in lines).strip("\n") + "\n"


def read_jargon(root: Path) -> str:
    """The Jargon File from an unpacked jargon-text tree at `root`, as plain text."""
    with gzip.open(root / JARGON_FILE, "rt", encoding="utf-8") as stream:
        return stream.read().strip("\n") + "\n"


def build_text(source: str, work_dir: Path) -> str:
    """Download, unpack and read one source in `work_dir`."""
    package, reader = _recipe(source)
    root = unpack_deb(download_deb(package, work_dir / "deb"), work_dir / "root")
    text = reader(root)
    if len(text) < 10_000:
        raise TextFetchError(f"{source}: only {len(text)} characters read from {package}")
    return text


def _recipe(source: str) -> tuple[str, Callable[[Path], str]]:
    if source in AUSTEN_BOOKS:
        return AUSTEN_PACKAGE, lambda root: read_austen_book(root, source)
    if source == FALLBACK_SOURCE:
        return JARGON_PACKAGE, read_jargon
    raise ValueError(f"unknown text source {source!r}; choose one of {SOURCES}")


def cached_text(source: str) -> Path:
    """Path of the cached text of `source`, building it first when missing."""
    path = cache_dir() / f"{source}.txt"
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tqexport-text-") as work:
        text = build_text(source, Path(work))
    partial = path.with_suffix(".txt.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


def fetch(source: str, allow_fallback: bool = True) -> tuple[str, Path]:
    """Return (source actually used, cached text path); fall back to the Jargon File if Austen fails."""
    try:
        return source, cached_text(source)
    except (DebianPackageError, RLazyLoadError, TextFetchError, OSError) as error:
        if not allow_fallback or source == FALLBACK_SOURCE:
            raise TextFetchError(f"{source}: {error}") from error
        print(f"fetch: {source} failed ({error}); falling back to {FALLBACK_SOURCE}", file=sys.stderr)
        return FALLBACK_SOURCE, cached_text(FALLBACK_SOURCE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the UTF-8 text")
    parser.add_argument("--source", choices=SOURCES, default="emma")
    parser.add_argument("--no-fallback", action="store_true", help="fail instead of using the Jargon File")
    args = parser.parse_args(argv)
    try:
        used, path = fetch(args.source, allow_fallback=not args.no_fallback)
    except TextFetchError as error:
        print(f"fetch: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, args.out)
    text = path.read_text(encoding="utf-8")
    print(f"fetch: wrote {args.out} ({used}, {len(text)} characters, {text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
