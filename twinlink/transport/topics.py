"""MQTT topic names of a twinlink deployment: ``<root>/<kid hex>/<stream>``.

A deployment has its own *topic root* (default ``twinlink``), so two twins sharing one broker
never see each other's devices: the twin store records it (``TwinStore.topic_root``), the device
bundle carries it (settings ``topic_root``) and every MQTT command takes ``--topic-root``.

| topic                        | publisher          | payload                              |
|------------------------------|--------------------|--------------------------------------|
| ``<root>/<kid hex>/t``       | device             | one frame (QoS 1)                    |
| ``<root>/<kid hex>/a``       | twin (ingest)      | one ack (docs/PROTOCOL.md §15.1)     |
| ``<root>/<kid hex>/c``       | twin (ingest)      | one downlink frame (PROTOCOL.md §20) |
| ``<root>/<kid hex>/status``  | device, retained   | ``online`` / last will ``offline``   |
| ``<root>/_twin``             | twin, retained     | presence: the twin key's fingerprint |

No paho here: the store and provisioning validate roots without importing the MQTT client.
"""

from __future__ import annotations

import re

__all__ = ["PRESENCE_LEVEL", "TOPIC_ROOT", "check_topic_root", "presence_topic", "topic",
           "topic_kid"]

#: The topic root of a deployment that chose none.
TOPIC_ROOT = "twinlink"
#: The level under the root where the twin announces itself (never a kid: not hex).
PRESENCE_LEVEL = "_twin"
#: Longest root accepted (MQTT allows 65 535 bytes; a root is a name, not a payload).
MAX_ROOT = 128

_LEVEL = re.compile(r"[A-Za-z0-9._\-]+")


def check_topic_root(root: object) -> str:
    """Return ``root`` if it is a valid topic root, else raise ValueError saying why.

    A root is 1 to 128 characters: one or more ``/``-separated levels of ``A-Z a-z 0-9 . _ -``
    (no wildcards ``+``/``#``, no ``$`` prefix, no empty level, no spaces or control characters),
    so it can never subscribe to more than its own deployment's topics.
    """
    if not isinstance(root, str):
        raise ValueError(f"a topic root is a string, not {type(root).__name__}")
    if not 1 <= len(root) <= MAX_ROOT:
        raise ValueError(f"a topic root is 1 to {MAX_ROOT} characters")
    if not all(_LEVEL.fullmatch(level) for level in root.split("/")):
        raise ValueError(f"topic root {root[:40]!r} must be '/'-separated levels of "
                         "A-Z a-z 0-9 . _ - (no wildcards, no empty level)")
    return root


def topic(kid: bytes, stream: str, root: str = TOPIC_ROOT) -> str:
    """``<root>/<kid hex>/<stream>``: ``t`` telemetry, ``a`` acks, ``c`` downlink,
    ``status`` liveness."""
    return f"{root}/{kid.hex()}/{stream}"


def topic_kid(name: str, stream: str = "t", root: str = TOPIC_ROOT) -> bytes | None:
    """The kid a ``<root>/<kid hex>/<stream>`` topic names, or None if it names none (another
    root, another stream, or not 1 to 6 bytes of lowercase hex)."""
    prefix = root + "/"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split("/")
    if len(parts) != 2 or parts[1] != stream:
        return None
    h = parts[0]
    if not 2 <= len(h) <= 12 or len(h) % 2 or h != h.lower():
        return None
    try:
        return bytes.fromhex(h)
    except ValueError:
        return None


def presence_topic(root: str = TOPIC_ROOT) -> str:
    """``<root>/_twin``: where the serving twin keeps its retained presence message."""
    return f"{root}/{PRESENCE_LEVEL}"
