"""``twinlink update``: signing keys, manifests, and the device-side check (docs/UPDATES.md).

A thin layer over :mod:`twinlink.update`. Status goes to stderr; ``--json`` prints one JSON
object on stdout. ``verify`` exits 1 for a refused update (nothing changed on the device) or a
failed installer (the seq stays recorded), with ``{"ok": false, "reason": ...}`` under
``--json``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from .. import keys, update
from ..fileio import read_regular
from ..update import manifest as mf
from . import output
from .common import EXIT_FAILURE, EXIT_USAGE, add_command, add_json, fail, positive_seconds, say


def _seq(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seq is an unsigned integer, not {text!r}") from None
    if not 0 <= n <= mf.MAX_UINT:
        raise argparse.ArgumentTypeError("seq is an unsigned 64-bit integer")
    return n


def _read_manifest(path: str) -> bytes:
    try:
        return read_regular(path, update.MAX_MANIFEST)[0]
    except OSError as exc:
        raise fail(f"cannot read manifest {path}: {exc.strerror or exc}", EXIT_USAGE,
                   f"a manifest is a file of at most {update.MAX_MANIFEST} bytes") from None


def _summary(info: dict[str, Any]) -> str:
    return (f"seq {info['seq']}, {info['size']} bytes, sha256 {info['digest'][:16]}…, "
            f"key id {info['key_id']}, {info['bytes']}-byte manifest")


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, pub_path, public = update.generate_key(args.out, args.name, args.force)
    kid = update.key_id(public).hex()
    if args.json:
        output.emit({"key": str(key_path), "pub": str(pub_path), "key_id": kid})
    say(f"update key written: {key_path} (0600, keep it offline), {pub_path}; key id {kid}")
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
    info = update.parse(raw).describe()
    if args.json:
        output.emit({"manifest": args.out, **info})
    say(f"manifest written: {args.out} ({_summary(info)})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    m = update.parse(_read_manifest(args.manifest))
    info = m.describe()
    if args.pub:
        mf.verify_signature(m, [update.load_update_public(args.pub)])
        info["signature"] = "verified"
    if args.json:
        output.emit(info)
        return 0
    for k, v in info.items():
        print(f"{k:10} {v}")
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
    kids = [update.key_id(k).hex() for k in pubs]
    if args.json:
        output.emit({"device": args.device, "key_ids": kids, "vendor": args.vendor,
                     "class": args.device_class, "max_image": args.max_image})
    say(f"{args.device}: trusts update key(s) {', '.join(kids)} for vendor {args.vendor!r}, "
        f"class {args.device_class!r}")
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
        if args.json:
            output.emit({"ok": False, "reason": exc.reason, "error": str(exc)})
        refused = isinstance(exc, update.UpdateRefused)
        raise fail(f"{exc} ({exc.reason})", EXIT_FAILURE,
                   "nothing was changed on the device" if refused
                   else "the seq is recorded; fix the installer and run the same manifest again"
                   ) from None
    if args.json:
        output.emit(result.to_json())
    previous = "none" if result.previous_seq is None else result.previous_seq
    say(f"update seq {result.seq} {result.status.replace('_', ' ')} (previous seq {previous})"
        + ("; update keys rotated" if result.keys_rotated else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = add_command(
        sub, "update", "signed firmware updates: keys, manifests, verification",
        description="Signed firmware updates (docs/UPDATES.md). Each action is a subcommand "
                    "with its own options: 'twinlink update ACTION --help'.",
        examples=["twinlink update keygen --out offline",
                  "twinlink update make --key offline/update.key --image fw.bin --seq 14 "
                  "--vendor example.com --class pump-v2 --out fw.manifest",
                  "twinlink update verify --device keys/pump-17.device --state state "
                  "fw.manifest fw.bin"])

    def show_help(args: argparse.Namespace) -> int:  # no action: the group's help, exit 0
        group.print_help()
        return 0

    group.set_defaults(func=show_help)
    usub = group.add_subparsers(dest="update_action", metavar="ACTION")

    p = add_command(usub, "keygen", "generate an update-signing key (keep it offline)",
                    examples=["twinlink update keygen --out offline"])
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for NAME.key (0600) and NAME.pub")
    p.add_argument("--name", default="update", help="file stem")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    add_json(p, "also print the written paths and the key id as one JSON object")
    p.set_defaults(func=cmd_keygen)

    p = add_command(usub, "make", "sign a manifest for an image", examples=[
        "twinlink update make --key offline/update.key --image fw.bin --seq 14 "
        "--vendor example.com --class pump-v2 --out fw.manifest"])
    p.add_argument("--key", required=True, metavar="FILE", help="update-signing key")
    p.add_argument("--image", required=True, metavar="FILE", help="the firmware image")
    p.add_argument("--seq", required=True, type=_seq, metavar="N",
                   help="sequence number; devices accept only a higher one than installed")
    p.add_argument("--vendor", required=True, help="vendor domain (or UUID), e.g. example.com")
    p.add_argument("--class", dest="device_class", required=True, metavar="CLASS",
                   help="device class or model name (or UUID), e.g. pump-v2")
    p.add_argument("--uri", help="where devices fetch the image (informative; default: none)")
    p.add_argument("--next-key", action="append", metavar="PUB",
                   help="rotate: an update public key devices trust after this manifest "
                        "(repeat for several; default: no rotation)")
    p.add_argument("--out", required=True, metavar="FILE", help="manifest file to write")
    add_json(p, "also print the manifest's fields as one JSON object")
    p.set_defaults(func=cmd_make)

    p = add_command(usub, "inspect", "decode a manifest (and check it against a key)",
                    examples=["twinlink update inspect fw.manifest --pub offline/update.pub"])
    p.add_argument("manifest", help="manifest file")
    p.add_argument("--pub", metavar="FILE",
                   help="update public key to verify the signature with (default: no check)")
    add_json(p, "one JSON object")
    p.set_defaults(func=cmd_inspect)

    p = add_command(usub, "trust", "put update keys, vendor and class into a device bundle",
                    examples=["twinlink update trust --device keys/pump-17.device "
                              "--pub offline/update.pub --vendor example.com --class pump-v2"])
    p.add_argument("--device", required=True, metavar="BUNDLE", help="device bundle to update")
    p.add_argument("--pub", required=True, action="append", metavar="FILE",
                   help="update public key (repeat for several, at most 4)")
    p.add_argument("--vendor", required=True, help="vendor domain (or UUID)")
    p.add_argument("--class", dest="device_class", required=True, metavar="CLASS",
                   help="device class or model name (or UUID)")
    p.add_argument("--max-image", type=int, metavar="BYTES",
                   help="largest image the device accepts (default: no limit)")
    add_json(p, "also print what was stored as one JSON object")
    p.set_defaults(func=cmd_trust)

    p = add_command(usub, "verify", "verify a manifest and image on the device; record it",
                    description="Check the manifest (signature by a trusted update key, vendor, "
                                "class, seq above the installed one) and the image (SHA-256, "
                                "size), record the new seq durably, then run --install-cmd.",
                    examples=["twinlink update verify --device keys/pump-17.device --state state"
                              " --install-cmd ./install.sh fw.manifest fw.bin"])
    p.add_argument("--device", required=True, metavar="BUNDLE", help="device bundle")
    p.add_argument("--state", required=True, metavar="DIR", help="the device's state directory")
    p.add_argument("--install-cmd", metavar="CMD",
                   help="installer run as CMD IMAGE after the record is written, with "
                        "TWINLINK_UPDATE_SEQ, _DIGEST and _SIZE set (default: none)")
    p.add_argument("--install-timeout", type=positive_seconds, default=600.0, metavar="S",
                   help="seconds the installer may take")
    p.add_argument("manifest", help="manifest file")
    p.add_argument("image", help="image file")
    add_json(p, "one JSON object: the result, or {ok: false, reason} for a refusal")
    p.set_defaults(func=cmd_verify)
