"""Download one Debian binary package with `apt-get download` and unpack it with `dpkg -x`.

The system's apt configuration is never changed. When the system's package lists do not know the package
(a fresh machine where `apt-get update` never ran), a private lists/cache folder under the temporary
directory is filled by `apt-get update` with the system's sources and used for that one download.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class DebianPackageError(RuntimeError):
    """The package could not be downloaded or unpacked."""


def _apt_download(package: str, work_dir: Path, options: list[str]) -> Path | None:
    """Run `apt-get download` in `work_dir`; return the .deb path, or None when apt could not get it."""
    command = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", *options, "download", package]
    done = subprocess.run(command, cwd=work_dir, capture_output=True, text=True, check=False)
    debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if done.returncode == 0 and debs:
        return debs[-1]
    return None


def _private_apt_options(state_dir: Path) -> list[str]:
    lists = state_dir / "lists"
    cache = state_dir / "cache"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    return [
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Cache={cache}",
        "-o",
        "Debug::NoLocking=1",
    ]


def download_deb(package: str, work_dir: Path) -> Path:
    """Download `package`'s .deb into `work_dir`, refreshing a private copy of the lists if needed."""
    if shutil.which("apt-get") is None:
        raise DebianPackageError("apt-get not found: this fetcher needs a Debian-based system")
    work_dir.mkdir(parents=True, exist_ok=True)
    deb = _apt_download(package, work_dir, [])
    if deb is not None:
        return deb
    options = _private_apt_options(work_dir / "apt-state")
    update = subprocess.run(
        ["apt-get", "-q", "-o", "APT::Sandbox::User=root", *options, "update"],
        capture_output=True,
        text=True,
        check=False,
    )
    deb = _apt_download(package, work_dir, options)
    if deb is None:
        raise DebianPackageError(
            f"apt-get download {package} failed, also after a private apt-get update "
            f"(exit {update.returncode}): {update.stderr.strip()[-400:]}"
        )
    return deb


def unpack_deb(deb: Path, dest_dir: Path) -> Path:
    """Extract the files of `deb` under `dest_dir` (as `dpkg -x` lays them out); return `dest_dir`."""
    if shutil.which("dpkg") is None:
        raise DebianPackageError("dpkg not found: this fetcher needs a Debian-based system")
    dest_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["dpkg", "-x", str(deb), str(dest_dir)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DebianPackageError(f"dpkg -x {deb.name} failed: {done.stderr.strip()[-400:]}")
    return dest_dir
