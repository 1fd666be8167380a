"""A device process for the update delivery tests: takes updates over MQTT until killed.

    python update_delivery_worker.py BUNDLE STATE_DIR BROKER_URL INSTALLED_FILE

Prints ``staged <offset>`` (what it resumed from) and ``ready`` once its downlink is
subscribed; the installer copies the image to INSTALLED_FILE and prints ``installed <seq>``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from twinlink import Device
from twinlink.mqtt_link import for_device


def main() -> None:
    bundle, state, url, out = sys.argv[1:5]
    dev = Device.load(bundle, state)
    dev.link = for_device(dev, url)

    def install(path: Path, m: object) -> None:
        Path(out).write_bytes(path.read_bytes())
        print(f"installed {getattr(m, 'seq', '?')}", flush=True)

    dev.send({"boot": 1})  # the twin learns the device's context
    handler = dev.on_update(install)
    print(f"staged {handler.offset}", flush=True)
    if not dev.link.downlink_subscribed.wait(30):
        sys.exit("downlink not subscribed")
    print("ready", flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
