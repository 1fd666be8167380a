"""``twinlink update``: signing keys, manifests, and the device-side check (docs/UPDATES.md).

A thin layer over :mod:`twinlink.update`. ``verify`` prints one JSON line on stdout: the
result, or ``{"ok": false, "reason": ...}`` for a refusal (exit 1, one line on stderr too).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import keys, update
from ..fileio import read_regular
from . import EXIT_FAILURE, EXIT_USAGE, fail


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _seq(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("seq is an unsigned integer") from None
    if not 0 <= n <= update.manifest.MAX_UINT:
        raise argparse.ArgumentTypeError("seq is an unsigned 64-bit integer")
    return n


def _read_manifest(path: str) -> bytes:
    try:
        return read_regular(path, update.MAX_MANIFEST)[0]
    except OSError as exc:
        raise fail(f"cannot read manifest {path}: {exc.strerror or exc}", EXIT_USAGE,
                   f"a manifest is a file of at most {update.MAX_MANIFEST} bytes") from None


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, pub_path, public = update.generate_key(args.out, args.name, args.force)
    print(f"update key written: {key_path} (0600, keep it offline), {pub_path}; "
          f"key id {update.key_id(public).hex()}", file=sys.stderr)
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    seed = update.load_update_key(args.key)
    digest, size = update.hash_file(args.image)
    vid = update.vendor_uuid(args.vendor)
    next_keys = [update.load_update_public(p) for p in args.next_key or []]
    try:
        raw = update.make_manifest(seed, seq=args.seq, vendor_id=vid,
                                   class_id=update.class_uuid(vid, args.device_class),
                                   digest=digest, size=size, uri=args.uri, next_keys=next_keys)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE, "check --seq, --uri and --next-key") from None
    Path(args.out).write_bytes(raw)
    _emit({"manifest": args.out, **update.parse(raw).describe()})
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    raw = _read_manifest(args.manifest)
    m = update.parse(raw)
    out = m.describe()
    if args.pub:
        update.manifest.verify_signature(m, [update.load_update_public(args.pub)])
        out["signature"] = "verified"
    _emit(out)
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    bundle = keys.Bundle.load(args.device)
    pubs = [update.load_update_public(p) for p in args.pub]
    try:
        update.add_update_trust(bundle.settings, pubs, args.vendor, args.device_class,
                                args.max_image)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE, "check --pub, --vendor and --class") from None
    bundle.save(args.device, overwrite=True)
    print(f"{args.device}: trusts update keys "
          f"{', '.join(update.key_id(k).hex() for k in pubs)} for vendor {args.vendor!r}, "
          f"class {args.device_class!r}", file=sys.stderr)
    return 0


def _command_installer(cmd: str, timeout: float) -> update.Installer:
    """An installer hook that runs ``cmd IMAGE`` with the manifest's values in the
    environment; a non-zero exit (or a timeout) is a failed install."""
    argv = shlex.split(cmd)

    def install(image: Path, m: update.Manifest) -> None:
        env = dict(os.environ, TWINLINK_UPDATE_SEQ=str(m.seq),
                   TWINLINK_UPDATE_DIGEST=m.digest.hex(), TWINLINK_UPDATE_SIZE=str(m.size))
        res = subprocess.run([*argv, str(image)], env=env, timeout=timeout, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with status {res.returncode}")

    return install


def cmd_verify(args: argparse.Namespace) -> int:
    bundle = keys.Bundle.load(args.device)
    raw = _read_manifest(args.manifest)
    installer = (_command_installer(args.install_cmd, args.install_timeout)
                 if args.install_cmd else None)
    try:
        result = update.verify_and_record(bundle, args.state, raw, args.image, installer)
    except (update.UpdateRefused, update.InstallFailed) as exc:
        _emit({"ok": False, "reason": exc.reason, "error": str(exc)})
        raise fail(str(exc), EXIT_FAILURE,
                   "nothing was changed on the device" if isinstance(exc, update.UpdateRefused)
                   else "the seq is recorded; fix the installer and run the same manifest again"
                   ) from None
    _emit(result.to_json())
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("update", help="signed firmware updates: keys, manifests, verification")
    usub = p.add_subparsers(dest="update_command", metavar="ACTION")
    usub.required = True

    q = usub.add_parser("keygen", help="generate an update-signing key (keep it offline)")
    q.add_argument("--out", required=True, help="directory for NAME.key (0600) and NAME.pub")
    q.add_argument("--name", default="update", help="file stem (default: update)")
    q.add_argument("--force", action="store_true", help="overwrite existing files")
    q.set_defaults(func=cmd_keygen)

    q = usub.add_parser("make", help="sign a manifest for an image")
    q.add_argument("--key", required=True, help="update-signing key (update.key)")
    q.add_argument("--image", required=True, help="the firmware image file")
    q.add_argument("--seq", required=True, type=_seq, help="sequence number (must increase)")
    q.add_argument("--vendor", required=True, help="vendor domain (or UUID), e.g. example.com")
    q.add_argument("--class", dest="device_class", required=True,
                   help="device class / model name (or UUID), e.g. pump-v2")
    q.add_argument("--uri", help="where devices fetch the image (informative)")
    q.add_argument("--next-key", action="append", metavar="PUB",
                   help="rotate: the update public key(s) devices trust after this manifest")
    q.add_argument("--out", required=True, help="manifest file to write")
    q.set_defaults(func=cmd_make)

    q = usub.add_parser("inspect", help="decode a manifest (and check it against a key)")
    q.add_argument("manifest")
    q.add_argument("--pub", help="update public key to verify the signature with")
    q.set_defaults(func=cmd_inspect)

    q = usub.add_parser("trust", help="put update keys, vendor and class into a device bundle")
    q.add_argument("--device", required=True, help="device bundle to update (NAME.device)")
    q.add_argument("--pub", required=True, action="append", help="update public key (repeat)")
    q.add_argument("--vendor", required=True)
    q.add_argument("--class", dest="device_class", required=True)
    q.add_argument("--max-image", type=int, help="largest image the device accepts, in bytes")
    q.set_defaults(func=cmd_trust)

    q = usub.add_parser("verify", help="verify a manifest and image on the device; record it")
    q.add_argument("--device", required=True, help="device bundle (NAME.device)")
    q.add_argument("--state", required=True, help="the device's state directory")
    q.add_argument("--install-cmd", help="installer run as CMD IMAGE after the record is "
                   "written (env TWINLINK_UPDATE_SEQ, _DIGEST, _SIZE)")
    q.add_argument("--install-timeout", type=float, default=600.0)
    q.add_argument("manifest")
    q.add_argument("image")
    q.set_defaults(func=cmd_verify)
