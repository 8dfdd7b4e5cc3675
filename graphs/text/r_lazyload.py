"""Read one object from an R lazy-load database (`NAME.rdx` index + `NAME.rdb` blobs) without R.

R packages store their data sets this way (`data/Rdata.rdx`, `data/Rdata.rdb`). The index is an RDS file
holding `variables`: name -> (offset, length) into the .rdb. Each blob is a 4-byte big-endian length of the
uncompressed data, then (for R's default compression) a zlib stream of an R serialization, which the PyPI
package `rdata` parses and converts to Python/NumPy objects.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Any


class RLazyLoadError(RuntimeError):
    """The lazy-load database does not hold the object, or in a form we cannot read."""


def _read_rds(path: Path) -> Any:
    import rdata  # pulls in pandas and xarray: only when a database is really read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns "Unknown file type: assumed RDS" on headerless blobs
        return rdata.read_rds(path)


def list_objects(base: Path) -> dict[str, tuple[int, int]]:
    """Names in the database at `base` (path without .rdx/.rdb) with their (offset, length) in the .rdb."""
    index = _read_rds(base.with_suffix(".rdx"))
    return {str(name): (int(span[0]), int(span[1])) for name, span in index["variables"].items()}


def read_object(base: Path, name: str) -> Any:
    """Load object `name` from the lazy-load database at `base`, converted by `rdata`."""
    objects = list_objects(base)
    if name not in objects:
        raise RLazyLoadError(f"{base.name}.rdx has no object {name!r}; it has {sorted(objects)}")
    offset, length = objects[name]
    with base.with_suffix(".rdb").open("rb") as stream:
        stream.seek(offset)
        blob = stream.read(length)
    if len(blob) != length or length < 5:
        raise RLazyLoadError(f"{base.name}.rdb: object {name!r} is truncated ({len(blob)} of {length} bytes)")
    expected = int.from_bytes(blob[:4], "big")
    try:
        raw = zlib.decompress(blob[4:])
    except zlib.error as error:
        raise RLazyLoadError(f"{base.name}.rdb: object {name!r} is not zlib-compressed ({error})") from error
    if len(raw) != expected:
        raise RLazyLoadError(
            f"{base.name}.rdb: object {name!r} inflates to {len(raw)} bytes, header says {expected}"
        )
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rdata.conversion.convert(rdata.parser.parse_data(raw))
