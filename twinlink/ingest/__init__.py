"""The twin's ingest services: frames from a transport into :meth:`Twin.open_many`.

- :class:`MqttIngest` (``twinlink serve``): a persistent MQTT session, batches, end-to-end acks
  and broker acks only after the commit (:mod:`twinlink.ingest.mqtt`).
- :class:`SerialReceiver` (``twinlink monitor``): frames from a serial port, one batch per read
  (:mod:`twinlink.ingest.serial`).
"""

from __future__ import annotations

from .mqtt import DEFAULT_CLIENT_ID, IngestStats, MqttIngest, serve
from .serial import SerialReceiver

__all__ = ["DEFAULT_CLIENT_ID", "IngestStats", "MqttIngest", "SerialReceiver", "serve"]
