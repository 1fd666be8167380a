"""The twin's ingest services: frames from a transport into :meth:`Twin.open_many`.

- :class:`MqttIngest` (``twinlink serve``): a persistent MQTT session, batches, end-to-end acks
  and broker acks only after the commit (:mod:`twinlink.ingest.mqtt`).
- :class:`SerialReceiver` (``twinlink monitor``, ``serve --serial``): frames from a serial port,
  one batch per read, acks written back on the port if asked (:mod:`twinlink.ingest.serial`).
- :class:`Acknowledger`: the end-to-end acks of a committed batch, for any transport
  (:mod:`twinlink.ingest.acks`).
"""

from __future__ import annotations

from .acks import Acknowledger
from .mqtt import DEFAULT_CLIENT_ID, IngestStats, MqttIngest, TopicRootTaken, serve
from .serial import SerialReceiver

__all__ = ["DEFAULT_CLIENT_ID", "Acknowledger", "IngestStats", "MqttIngest", "SerialReceiver",
           "TopicRootTaken", "serve"]
