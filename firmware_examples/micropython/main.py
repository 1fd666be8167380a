"""Board entry point (copied to the board as main.py): a temperature sender on UART1.

Edit the three marked lines for your board. Files expected on the board's file system:
  /lite.device   the bundle from 'twinlink provision NAME --lite' (keep it off shared media)
  /tllite/       this package
  /app.py        the loop
"""

import time

import app
import machine
from tllite import FileSlots, LiteSender, load_bundle

UART_ID, TX_PIN, RX_PIN, BAUD = 1, 4, 5, 115200  # EDIT: your UART and pins
PERIOD_MS = 5000  # EDIT: one reading every 5 s


def _temperature_source():  # EDIT: your sensor; these are the on-chip ones
    try:
        import esp32

        return lambda: round(esp32.mcu_temperature(), 2)  # ESP32-S2/S3/C3 (°C)
    except (ImportError, AttributeError):
        pass
    adc = machine.ADC(4)  # RP2040 / RP2350 internal sensor, datasheet formula

    def rp2_temp():
        volts = adc.read_u16() * 3.3 / 65535
        return round(27 - (volts - 0.706) / 0.001721, 2)

    return rp2_temp


def main():
    uart = machine.UART(UART_ID, BAUD, tx=machine.Pin(TX_PIN), rx=machine.Pin(RX_PIN))
    sender = LiteSender(load_bundle("/lite.device"), FileSlots("/tl_seq"))
    app.run(sender, _temperature_source(), uart.write, period_ms=PERIOD_MS,
            sleep_ms=time.sleep_ms)


main()
