"""goosebit plugin: accept hup update bundles as software.

goosebit's upload reads the version and the hardware compatibility of a software image
from its header and knows only SWUpdate and RAUC images. This plugin teaches it the hup
bundle: a tar archive whose first member is ``manifest.json`` (docs/bundle-format.md). Its
``version`` becomes the software's version, its ``compatible`` the hardware model
(revision ``default``); the file's size and SHA-1 are what goosebit sends devices. The
bundle itself is not changed, and its signature is checked by the device, not here.

Enable it with ``GOOSEBIT_PLUGINS='["hup"]'`` (or ``plugins: [hup]`` in goosebit.yaml).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from typing import Any

import anyio
from goosebit.db.models import SoftwareImageFormat
from goosebit.schema.plugins import PluginSchema
from goosebit.updates import swdesc

# The manifest's limit in the bundle format.
MAX_MANIFEST = 1 << 20
FIRST_MEMBER = "manifest.json"


def read_hup(path: str) -> dict[str, Any] | None:
    """The goosebit attributes of a hup bundle, or None when the file is not one."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            first = tar.next()
            if first is None or first.name != FIRST_MEMBER or not first.isfile():
                return None
            if first.size > MAX_MANIFEST:
                raise ValueError(f"{FIRST_MEMBER} is larger than {MAX_MANIFEST} bytes")
            f = tar.extractfile(first)
            if f is None:
                return None
            manifest = json.loads(f.read())
    except tarfile.TarError:
        return None
    if manifest.get("format") != 1:
        raise ValueError(f"hup bundle: unknown format {manifest.get('format')!r}")
    version = manifest.get("version")
    compatible = manifest.get("compatible")
    if not isinstance(version, str) or not isinstance(compatible, str):
        raise ValueError("hup bundle: the manifest lacks version or compatible")
    sha1 = hashlib.sha1()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 18):
            sha1.update(chunk)
            size += len(chunk)
    return {
        "version": version,
        "compatibility": [{"hw_model": compatible, "hw_revision": "default"}],
        "size": size,
        "hash": sha1.hexdigest(),
        # goosebit has no format of its own for other images; its default is stored.
        "image_format": SoftwareImageFormat.SWU,
    }


_parse_file = swdesc.parse_file


async def parse_file(file: anyio.Path) -> dict[str, Any]:
    """goosebit's parser with hup bundles tried first."""
    attributes = await anyio.to_thread.run_sync(read_hup, str(file))
    if attributes is not None:
        return attributes
    return await _parse_file(file)


# goosebit calls swdesc.parse_file for uploads and for software given by URL.
swdesc.parse_file = parse_file

config = PluginSchema(name="hup")
