"""The native backend itself: its surface, its C test runner, its build without libsodium headers
or without a compiler, and public vectors through the C key schedule."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from twinlink import _backend_pure as P
from twinlink import backends, errors

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"


def _native():
    try:
        from twinlink import _backend_native
    except ImportError as exc:
        reason = backends.native_error() or f"{type(exc).__name__}: {exc}"
        if os.environ.get("TWINLINK_REQUIRE_NATIVE"):
            pytest.fail(f"native backend not built: {reason}", pytrace=False)
        pytest.skip(f"native backend not built: {reason}")
    return _backend_native


@pytest.fixture(scope="module")
def N():
    return _native()


def test_same_surface_as_pure(N):
    """Both backends implement FrameBackend with the same signatures (mypy checks the
    types; this checks the names and parameters at run time too)."""
    import inspect

    from twinlink.frametypes import FrameBackend

    members = [m for m in vars(FrameBackend) if not m.startswith("_") and m != "NAME"]
    assert set(members) >= {"seal", "seal_many", "seal_lite", "parse", "verify", "decrypt",
                            "open_frame"}
    for m in members:
        want = list(inspect.signature(getattr(FrameBackend, m)).parameters)[1:]  # minus self
        for be in (P, N):
            assert list(inspect.signature(getattr(be, m)).parameters) == want, (be.NAME, m)
    assert N.NAME == "native" and P.NAME == "python"
    assert N.Parsed is P.Parsed


def test_payload_reasons_are_one_table(N):
    """The C reasons (native/tl_cbor_check.c) and the Python ones (cbor.py) are the same texts
    under the same numbers, so the two validators report identically."""
    from twinlink import cbor

    assert N._PAYLOAD_REASONS == cbor.PAYLOAD_REASONS
    assert N._lib.TL_PAYLOAD_MAX == cbor.PAYLOAD_MAX
    assert N._lib.TL_PAYLOAD_MAX_DEPTH == cbor.PAYLOAD_MAX_DEPTH


def test_backend_env_switch_reports_native(N):
    env = dict(os.environ, TWINLINK_BACKEND="native", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c",
                          "import twinlink.backends as b; print(b.explain())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("native (")


def test_error_table_covers_every_c_code(N):
    codes = {int(v) for v in re.findall(r"TL_E_\w+ = (\d+)", (NATIVE / "tl_error.h").read_text())}
    assert codes and codes <= set(N._ERRORS)
    assert N._ERRORS[1][0] is errors.MalformedFrame
    assert N._ERRORS[2][0] is errors.BadSignature
    assert N._ERRORS[3][0] is errors.DecryptionFailed


def test_pynacl_adapter_never_includes_sodium_h():
    src = (NATIVE / "tl_crypto_pynacl.c").read_text() + (NATIVE / "tl_crypto_pynacl.h").read_text()
    assert "sodium.h" not in re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    # List every header the adapter pulls in; none may be libsodium's.
    res = subprocess.run([cc, "-std=c99", "-E", "-H", "-I", str(NATIVE),
                          str(NATIVE / "tl_crypto_pynacl.c"), "-o", os.devnull],
                         capture_output=True, text=True, check=True)
    assert "sodium" not in res.stderr.lower()


def test_c_runner_under_sanitizers():
    """make -C native test: the C test runner under ASan + UBSan against libsodium."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("make or cc missing (scripts/ci-native.sh installs the toolchain)")
    if not any(Path(p, "sodium.h").exists() for p in ("/usr/include", "/usr/local/include")):
        pytest.skip("libsodium-dev missing (apt-get install libsodium-dev; scripts/ci-native.sh)")
    res = subprocess.run(["make", "-s", "-C", str(NATIVE), "test"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert " 0 failures" in res.stdout


def _build_copy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(NATIVE, tmp_path / "native", ignore=shutil.ignore_patterns("build"))
    (tmp_path / "twinlink").mkdir(exist_ok=True)
    shutil.copy(ROOT / "twinlink" / "_native_build.py", tmp_path / "twinlink")
    (tmp_path / "README.md").write_text("x\n")
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=300)


def test_build_without_compiler_stays_pure(tmp_path):
    """With no working compiler, build_ext warns in one line, records why where the package
    lands (pip hides build output; twinlink doctor reads the file) and succeeds (pure)."""
    res = _build_copy(tmp_path, CC="/bin/false", LDSHARED="/bin/false", TWINLINK_WERROR="")
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [x for x in res.stderr.splitlines() if "twinlink C extension not built" in x]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: ")
    assert not list((tmp_path / "twinlink").glob("_native*.so"))
    reason = (tmp_path / "twinlink" / backends.BUILD_ERROR_FILE.name).read_text()
    assert "/bin/false" in reason and len(reason.splitlines()) == 1


def test_build_failure_is_fatal_in_ci(tmp_path):
    """TWINLINK_WERROR=1 (CI): a failed build fails, it does not fall back to pure."""
    res = _build_copy(tmp_path, CC="/bin/false", LDSHARED="/bin/false", TWINLINK_WERROR="1")
    assert res.returncode != 0
    assert "twinlink C extension not built" not in res.stderr


def test_native_build_script_holds_no_c():
    """The C glue is C (native/tl_py.c); the build script only reads headers."""
    src = (ROOT / "twinlink" / "_native_build.py").read_text()
    assert not re.search(r"\)\s*\n?\s*\{", src)  # no C function body
    assert not re.search(r"\b(static|return|typedef)\b[^\n]*;", src)  # no C statement
    assert "tl_py.c" in src and "tl_py.h" in src


def test_rfc5869_a1(N):
    okm = N.hkdf_sha256(bytes(range(13)), b"\x0b" * 22, bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_rfc8613_c11_through_c_hkdf(N):
    from twinlink import oscore

    v = json.loads((ROOT / "tests" / "vectors" / "rfc8613-oscore.json").read_text())
    d = v["derivation_c_1_1"]
    secret, salt = bytes.fromhex(d["master_secret"]), bytes.fromhex(d["master_salt"])
    info = oscore.hkdf_info(b"", None, d["alg_aead"], "Key", 16)
    assert info.hex() == d["info_sender_key"]
    assert N.hkdf_sha256(salt, secret, info, 16).hex() == d["sender_key"]
    info = oscore.hkdf_info(bytes.fromhex(d["recipient_id"]), None, d["alg_aead"], "Key", 16)
    assert N.hkdf_sha256(salt, secret, info, 16).hex() == d["recipient_key"]
    info = oscore.hkdf_info(b"", None, d["alg_aead"], "IV", 13)
    assert N.hkdf_sha256(salt, secret, info, 13).hex() == d["common_iv"]


def test_line_and_window_errors(N):
    with pytest.raises(errors.LineError):
        N.cobs_decode(b"\x05\x01")
    w = N.Window(128)
    w.accept(500)
    with pytest.raises(errors.Replay):
        w.check(500)
    with pytest.raises(errors.TooOld):
        w.check(500 - 128)
    w.check(500 - 127)
    with pytest.raises(ValueError):
        N.Window(12)

