#!/usr/bin/env python3
"""A/B updates of the Raspberry Pi app: verify with twinlink, install into the idle slot, switch,
health-check, and roll back automatically when the new slot fails.

Layout under ``--root`` (e.g. /opt/twinlink/app)::

    slots/a/  slots/b/       two copies of the app; one is active
    current -> slots/a       symlink the service runs from (ExecStart=.../current/...)
    ab-state.json            {"active": "a", "trial": null, "last": ...}

An image is a tar archive (optionally gzip-compressed) of the app directory: regular files and
directories only. ``apply`` runs :func:`twinlink.update.verify_and_record`, which checks the
signed manifest and the image and records the new sequence number *before* calling the
installer below:

1. unpack the image into the idle slot (a fresh directory, fsynced, renamed into place);
2. write ``trial`` to the state, then atomically repoint ``current`` to the new slot;
3. run the health check in the new slot (default ``python3 health.py``, with a timeout);
4. pass: the trial is committed (the new slot is active). Fail: ``current`` goes back to the
   previous slot and the update is reported failed (the recorded seq stays: a fixed image must
   come with a higher seq).

A power cut or kill between 2 and 4 leaves an unconfirmed trial; ``recover`` (run it before
the service starts: ``ExecStartPre=``) rolls it back, as a bootloader reverts an unconfirmed
test boot.

    python3 ab_update.py init --root R --from ./app
    python3 ab_update.py apply --root R --bundle pi.device --state S MANIFEST IMAGE
    python3 ab_update.py recover --root R
    python3 ab_update.py status --root R

Exit codes: 0 done (or already installed), 1 refused or failed (nothing switched), 2 usage,
4 the health check failed and the previous slot was restored.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

EXIT_ROLLED_BACK = 4
SLOTS = ("a", "b")
#: Largest unpacked image accepted (the manifest bounds the archive, this the expansion).
MAX_UNPACKED = 512 * 1024 * 1024


class ABError(Exception):
    """The A/B layout is missing or damaged, or an image cannot be installed."""


class HealthCheckFailed(ABError):
    """The new slot failed its health check; the previous slot is active again."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ABSlots:
    """The A/B directory pair under ``root``; an instance is also a twinlink installer hook."""

    def __init__(self, root: str | os.PathLike[str], health_cmd: list[str] | None = None,
                 health_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.slots = self.root / "slots"
        self.current = self.root / "current"
        self.state_path = self.root / "ab-state.json"
        self.health_cmd = health_cmd or [sys.executable, "health.py"]
        self.health_timeout = health_timeout

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            raise ABError(f"{self.root} is not an A/B root (run: ab_update.py init)") from None
        except ValueError:
            raise ABError(f"{self.state_path} is damaged") from None
        if doc.get("active") not in SLOTS:
            raise ABError(f"{self.state_path} names no active slot")
        return doc  # type: ignore[no-any-return]

    def _save(self, doc: dict[str, Any]) -> None:
        from twinlink.fileio import atomic_write

        atomic_write(self.state_path, json.dumps(doc, sort_keys=True) + "\n", 0o644)

    def _point(self, slot: str) -> None:
        """Repoint ``current`` at ``slot`` atomically (new symlink renamed over the old)."""
        tmp = self.root / ".current.tmp"
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(f"slots/{slot}", tmp)
        os.replace(tmp, self.current)
        _fsync_dir(self.root)

    def active(self) -> str:
        return str(self.state()["active"])

    # -- setup ---------------------------------------------------------------------------

    def init(self, source: str | os.PathLike[str]) -> None:
        """Create the layout with a copy of ``source`` as slot a (the factory image)."""
        if self.state_path.exists():
            raise ABError(f"{self.root} is already an A/B root")
        self.slots.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, self.slots / "a")
        (self.slots / "b").mkdir(exist_ok=True)
        self._point("a")
        self._save({"active": "a", "trial": None, "last": None})

    # -- recovery ------------------------------------------------------------------------

    def recover(self) -> str | None:
        """Roll back a trial that was never confirmed (a crash or power cut during the health
        check); make ``current`` agree with the state. Returns the restored slot, or None."""
        doc = self.state()
        trial = doc.get("trial")
        if trial:
            doc["last"] = {"slot": trial["slot"], "seq": trial.get("seq"),
                           "result": "rolled_back", "why": "trial was never confirmed"}
            doc["trial"] = None
        target = f"slots/{doc['active']}"
        if not self.current.is_symlink() or os.readlink(self.current) != target:
            self._point(doc["active"])
        if trial:
            self._save(doc)
            return str(doc["active"])
        return None

    # -- install -------------------------------------------------------------------------

    def _unpack(self, image: Path, dest: Path) -> None:
        """Unpack a tar image into a new ``dest``: regular files and directories only, no
        absolute or escaping names, bounded size; each file and directory fsynced."""
        total = 0
        dest.mkdir(mode=0o755)
        try:
            with tarfile.open(image, "r:*") as tar:
                for member in tar:
                    name = PurePosixPath(member.name)
                    if member.isdir() and not name.parts:
                        continue  # "." of an archive made with tar -C app -cf image .
                    if (name.is_absolute() or ".." in name.parts or not name.parts
                            or not (member.isfile() or member.isdir())):
                        raise ABError(f"image member {member.name!r} is not a plain relative "
                                      "file or directory")
                    total += member.size
                    if total > MAX_UNPACKED:
                        raise ABError("image unpacks to more than the allowed size")
                    target = dest.joinpath(*name.parts)
                    if member.isdir():
                        target.mkdir(mode=0o755, parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    mode = 0o755 if member.mode & 0o111 else 0o644
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 mode)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(src, out)
                        out.flush()
                        os.fsync(out.fileno())
        except (tarfile.TarError, OSError) as exc:
            raise ABError(f"cannot unpack the image: {exc}") from None
        for d, _, _ in os.walk(dest):
            _fsync_dir(Path(d))

    def _healthy(self, slot: str) -> tuple[bool, str]:
        env = dict(os.environ, TL_SLOT=slot, TL_SLOT_DIR=str(self.slots / slot))
        try:
            res = subprocess.run(self.health_cmd, cwd=self.slots / slot, env=env,
                                 timeout=self.health_timeout, capture_output=True, check=False)
        except subprocess.TimeoutExpired:
            return False, f"health check timed out after {self.health_timeout} s"
        except OSError as exc:
            return False, f"health check could not run: {exc}"
        return res.returncode == 0, f"health check exited with status {res.returncode}"

    def __call__(self, image: Path, manifest: Any = None) -> None:
        """The installer hook: install ``image`` into the idle slot, switch, health-check,
        commit or roll back. Raises :class:`HealthCheckFailed` after a rollback,
        :class:`ABError` when nothing was switched."""
        self.recover()
        doc = self.state()
        previous = doc["active"]
        slot = "b" if previous == "a" else "a"
        seq = getattr(manifest, "seq", None)
        staging = self.slots / f".{slot}.new"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            self._unpack(Path(image), staging)
        except ABError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(self.slots / slot, ignore_errors=True)
        os.replace(staging, self.slots / slot)
        _fsync_dir(self.slots)
        doc["trial"] = {"slot": slot, "previous": previous, "seq": seq}
        self._save(doc)  # a crash from here on is rolled back by recover()
        self._point(slot)
        ok, why = self._healthy(slot)
        if ok:
            doc.update(active=slot, trial=None,
                       last={"slot": slot, "seq": seq, "result": "committed", "why": why})
            self._save(doc)
            return
        self._point(previous)
        doc.update(trial=None, last={"slot": slot, "seq": seq, "result": "rolled_back",
                                     "why": why})
        self._save(doc)
        raise HealthCheckFailed(f"slot {slot} failed: {why}; slot {previous} is active again")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="A/B updates of the twinlink Pi app.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("init", "apply", "recover", "status"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True, help="A/B root directory")
        if name == "init":
            p.add_argument("--from", dest="source", required=True, help="the factory app dir")
        if name == "apply":
            p.add_argument("--bundle", required=True, help="device bundle with update trust")
            p.add_argument("--state", required=True, help="the device's state directory")
            p.add_argument("--health", help="health check command, run in the new slot "
                           "(default: python3 health.py)")
            p.add_argument("--health-timeout", type=float, default=60.0)
            p.add_argument("manifest")
            p.add_argument("image")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from twinlink import TwinlinkError, keys, update
    from twinlink.fileio import read_regular

    health = shlex.split(args.health) if getattr(args, "health", None) else None
    ab = ABSlots(args.root, health, getattr(args, "health_timeout", 60.0))
    try:
        if args.cmd == "init":
            ab.init(args.source)
        elif args.cmd == "recover":
            restored = ab.recover()
            if restored:
                print(f"ab_update: unconfirmed trial rolled back to slot {restored}",
                      file=sys.stderr)
        elif args.cmd == "apply":
            manifest, _ = read_regular(args.manifest, update.MAX_MANIFEST)
            result = update.verify_and_record(keys.Bundle.load(args.bundle), args.state,
                                              manifest, args.image, installer=ab)
            print(json.dumps({**result.to_json(), "active": ab.active()}))
            return 0
        print(json.dumps(ab.state()))
        return 0
    except update.InstallFailed as exc:
        rolled = isinstance(exc.__cause__, HealthCheckFailed)
        print(json.dumps({"ok": False, "reason": "rolled_back" if rolled else exc.reason,
                          "error": str(exc.__cause__ or exc)}))
        print(f"ab_update: {exc}", file=sys.stderr)
        return EXIT_ROLLED_BACK if rolled else 1
    except (TwinlinkError, ABError, OSError) as exc:
        print(json.dumps({"ok": False, "reason": getattr(exc, "reason", "error"),
                          "error": str(exc)}))
        print(f"ab_update: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
