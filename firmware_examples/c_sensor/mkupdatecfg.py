#!/usr/bin/env python3
"""Turn a device bundle's update trust into the c_sensor update configuration blob
(layout: update.h): update keys, vendor-id, class-id.

    twinlink update trust --device keys/sensor.device --pub keys/update.pub \\
        --vendor example.com --class sensor-v1
    python3 mkupdatecfg.py keys/sensor.device sensor-update.cfg

No secret in it (public keys and identifiers), but it decides which firmware the board
accepts: store it where the firmware is, write-protected like the firmware.
"""

from __future__ import annotations

import argparse
import binascii
import sys

from twinlink import keys
from twinlink.errors import KeyFileError
from twinlink.update import trust_from_bundle


def blob(bundle: keys.Bundle) -> bytes:
    """The 167-byte blob; KeyFileError if the bundle has no update trust."""
    trust = trust_from_bundle(bundle)
    body = (b"TLUC" + bytes((len(trust.keys),)) + b"".join(trust.keys).ljust(128, b"\0")
            + trust.vendor_id + trust.class_id)
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    try:
        data = blob(keys.Bundle.load(args.bundle))
        with open(args.out, "wb") as fh:
            fh.write(data)
    except (OSError, KeyFileError) as exc:
        print(f"mkupdatecfg: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
