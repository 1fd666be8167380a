#!/usr/bin/env python3
"""Turn a twinlink device bundle into the c_sensor configuration blob (layout: config.h).

    python3 mkconfig.py keys/sensor.device sensor.cfg      # written with mode 0600

On a board, flash the blob to its configuration page; on the host, pass its path to c_sensor.
"""

from __future__ import annotations

import argparse
import binascii
import os
import sys
from typing import Callable

from twinlink import keys


def blob(bundle: keys.Bundle) -> bytes:
    """The 110-byte blob for a twinlink/1 bundle; ValueError for a lite bundle."""
    if bundle.device_key is None:
        raise ValueError("c_sensor signs its frames: provision the device without --lite")
    if bundle.master_salt or bundle.id_context is not None:
        raise ValueError("c_sensor derives with an empty Master Salt and no ID Context")
    chunk = int(bundle.settings.get("sequence_chunk", 256))
    if chunk & (chunk - 1) or not 1 <= chunk <= 1 << 20:
        raise ValueError("sequence_chunk must be a power of two up to 2^20 for c_sensor")
    body = (b"TLC1" + bytes((len(bundle.kid),)) + bundle.kid.ljust(6, b"\0")
            + bytes((chunk.bit_length() - 1,)) + bundle.device_key.secret64 + bundle.twin_public)
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")


def main(argv: list[str] | None = None, make: Callable[[keys.Bundle], bytes] = blob,
         doc: str = __doc__ or "", prog: str = "mkconfig") -> int:
    """Write ``make(bundle)`` to OUT with mode 0600 (mkupdatecfg.py reuses this with its blob)."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    try:
        data = make(keys.Bundle.load(args.bundle))
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(args.out, 0o600)
    except (ValueError, OSError, keys.KeyFileError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
