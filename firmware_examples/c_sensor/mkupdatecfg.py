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

import binascii
import os
import sys

from twinlink import keys
from twinlink.update import trust_from_bundle


def blob(bundle: keys.Bundle) -> bytes:
    """The 167-byte blob; KeyFileError if the bundle has no update trust."""
    trust = trust_from_bundle(bundle)
    body = (b"TLUC" + bytes((len(trust.keys),)) + b"".join(trust.keys).ljust(128, b"\0")
            + trust.vendor_id + trust.class_id)
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mkconfig import main

    sys.exit(main(None, blob, __doc__ or "", "mkupdatecfg"))
