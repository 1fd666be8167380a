"""The sending side: a provisioned device that seals readings and sends them over a link.

``Device.load("keys/pump-17.device", state_dir="state/")`` opens the bundle, takes the
sequence-number lock of that identity in ``state_dir`` and derives the pairwise context once.
``seal`` never reuses a (key, nonce) pair, across restarts, crashes, lost or copied state and
restored backups included: state that cannot be proven to be this device's own, latest state
makes the device start a fresh security context (a random ID Context, carried in the signed
header as the COSE "kid context"), which the twin adopts once the signature verifies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time as _time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from . import frame as _frame
from . import keys, oscore, senml
from .errors import FrameTooLarge, TwinlinkError
from .replay import DEFAULT_CHUNK, SequenceStore

log = logging.getLogger("twinlink.device")


#: Where sequence state lives when no ``state_dir`` is given.
def default_state_dir() -> Path:
    env = os.environ.get("TWINLINK_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "twinlink"


def state_path(bundle: keys.Bundle, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a device's sequence state lives: ``<state_dir>/<name>-<kid hex>-<t>.seq`` (its
    MQTT outbox beside it, suffix ``.outbox``). The counter belongs to (identity, Master Salt):
    an operator re-key starts a fresh one; the ID Context in use lives in the state itself (it
    changes on renewal)."""
    ctx_tag = hashlib.sha256(
        bundle.master_salt + b"|" + (bundle.id_context or b"")
    ).hexdigest()[:8]
    sdir = Path(state_dir) if state_dir is not None else default_state_dir()
    return sdir / f"{bundle.name}-{bundle.kid.hex()}-{ctx_tag}.seq"


def check_size(plaintext: bytes) -> bytes:
    """Return ``plaintext`` if the twin may store it (at most :data:`twinlink.frame.MAX_PAYLOAD`
    bytes, docs/PROTOCOL.md §13), else raise :class:`FrameTooLarge`: a larger reading would
    be refused for good, so it is refused here, before it costs a sequence number."""
    if len(plaintext) > _frame.MAX_PAYLOAD:
        raise FrameTooLarge(f"reading of {len(plaintext)} bytes exceeds the largest payload "
                            f"the twin accepts ({_frame.MAX_PAYLOAD} bytes)")
    return plaintext


class Link(Protocol):
    """Anything that carries frames: serial and MQTT transports implement ``send``."""

    def send(self, frame: bytes) -> None: ...


class Device:
    """A device identity with its durable sequence numbers; optionally attached to a link."""

    def __init__(
        self,
        bundle: keys.Bundle,
        state_dir: str | os.PathLike[str] | None = None,
        link: Link | None = None,
        *,
        chunk: int | None = None,
        renew: str = "auto",
        bundle_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.bundle = bundle
        self.name, self.kid = bundle.name, bundle.kid
        self.link = link
        self._sk = bundle.device_key.secret64 if bundle.device_key is not None else None
        self._lite = bundle.lite_key is not None
        self.stream = oscore.STREAM_TELEMETRY
        self.state_path = state_path(bundle, state_dir)
        lite_fresh = bundle.settings.get("lite_state", "unused") == "unused"
        self.seq = SequenceStore(
            self.state_path,
            chunk or int(bundle.settings.get("sequence_chunk", DEFAULT_CHUNK)),
            renew=renew,
            renewable=not self._lite,
            base_context=bundle.id_context,
            fresh=lite_fresh,
        )
        try:
            if self._lite and lite_fresh and bundle_path is not None:
                # A lite board cannot renew its context: remember (in the bundle, before the
                # first seal) that this identity has been used, so a lost state later is
                # refused instead of silently restarting at 0.
                bundle.settings["lite_state"] = "used"
                bundle.save(bundle_path, overwrite=True)
            #: The ID Context of the security context in use (None: the bundle's base one).
            self.id_context = self.seq.id_context
            #: Why the context was renewed when the state was opened ("" if resumed).
            self.renewed = self.seq.renewed
            if self.renewed and self.renewed != "no sequence state":
                log.warning("%s: %s; starting a fresh security context", self.name,
                            self.renewed)
            self._ctx = bundle.context(self.id_context)
            self._kid_context = None if self._lite else self.id_context
            self._downlink: Any = None  # twinlink.downlink.DownlinkReceiver, on first use
            self._closed = False
            #: ``on_event(type, detail)``: device security events of the downlink.
            self.on_event: Callable[[str, str], None] | None = None
        except BaseException:
            self.seq.close()
            raise

    @classmethod
    def load(
        cls,
        bundle: str | os.PathLike[str],
        state_dir: str | os.PathLike[str] | None = None,
        link: Link | None = None,
        **kw: Any,
    ) -> Device:
        """Load a device bundle file (mode 0600) and open its sequence state."""
        return cls(keys.Bundle.load(bundle), state_dir, link, bundle_path=bundle, **kw)

    def __repr__(self) -> str:
        return f"Device(name={self.name!r}, kid={self.kid.hex()}, profile={self.bundle.profile})"

    @property
    def profile(self) -> str:
        return self.bundle.profile

    def ack_context(self, sender_id: bytes = b"") -> oscore.Context:
        """The twin→device context of the security context in use (checks acknowledgements)."""
        return self.bundle.ack_context(self.id_context, sender_id)

    def _seal(self, seq: int, plaintext: bytes) -> bytes:
        if self._lite:
            return _frame.seal_lite(self._ctx, seq, plaintext, self.stream)
        assert self._sk is not None
        return _frame.seal(self._sk, self._ctx, seq, plaintext, self.stream,
                           kid_context=self._kid_context)

    @staticmethod
    def encode(reading: Mapping[str, Any], time: float | bool | None = True) -> bytes:
        """The SenML plaintext of a reading; ``time=True`` stamps the current time. Raises
        :class:`FrameTooLarge` above :data:`~twinlink.frame.MAX_PAYLOAD` bytes (a ValueError:
        the CLI's JSON-lines input skips such a line)."""
        t = _time.time() if time is True else (None if time is False or time is None
                                               else float(time))
        return check_size(senml.encode(reading, t))

    def seal(self, reading: Mapping[str, Any], *, time: float | bool | None = True) -> bytes:
        """Seal a ``{name: value}`` reading as a SenML frame with the next sequence number;
        raise :class:`FrameTooLarge` (no number taken) above :data:`~twinlink.frame.MAX_PAYLOAD`
        bytes of SenML."""
        plaintext = self.encode(reading, time)  # well-formed and size-checked
        return self._seal(self.seq.take(), plaintext)

    def seal_raw(self, plaintext: bytes) -> bytes:
        """Seal an already CBOR-encoded plaintext (it must be one well-formed CBOR item of at
        most :data:`~twinlink.frame.MAX_PAYLOAD` bytes: else :class:`FrameTooLarge` or
        :class:`~twinlink.errors.MalformedPayload`, and no sequence number is used)."""
        senml.loads(check_size(plaintext))
        return self._seal(self.seq.take(), plaintext)

    def seal_many(
        self, readings: Iterable[Mapping[str, Any]], *, time: float | bool | None = True
    ) -> list[bytes]:
        """Seal several readings with consecutive sequence numbers, reserved durably once.
        All or none: a reading above :data:`~twinlink.frame.MAX_PAYLOAD` bytes raises
        :class:`FrameTooLarge` before any number is taken."""
        plaintexts = [self.encode(r, time) for r in readings]  # all checked before take()
        if not plaintexts:
            return []
        first = self.seq.take(len(plaintexts))
        if self._lite:
            return [self._seal(first + i, p) for i, p in enumerate(plaintexts)]
        assert self._sk is not None
        return _frame.seal_many(self._sk, self._ctx, first, plaintexts, self.stream,
                                kid_context=self._kid_context)

    def verify_update(self, manifest: bytes, image_path: str | os.PathLike[str],
                      installer: Any = None) -> Any:
        """Verify a signed update manifest and its image for this device, persist the new
        update sequence number crash-safely, then call ``installer`` (see twinlink.update and
        docs/UPDATES.md). Raises :class:`~twinlink.update.UpdateRefused` (nothing changed) or
        :class:`~twinlink.update.InstallFailed`; returns the update result."""
        from . import update

        return update.verify_and_record(self.bundle, self.state_path.parent, manifest,
                                        image_path, installer)

    def send(self, reading: Mapping[str, Any], **kw: Any) -> bytes:
        """Seal a reading and hand the frame to the attached link; return the frame. Pending
        downlink reports (``tl:*``, :mod:`twinlink.downlink`) ride along and are cleared once
        the link took the frame."""
        if self.link is None:
            raise RuntimeError("no link attached: Device.load(..., link=...) or device.link = ...")
        dl = self._downlink
        if dl is None:
            frame = self.seal(reading, **kw)
            self.link.send(frame)
            return frame
        with dl.state.lock:
            reports = dl.state.take_reports()
            extra = None
            try:
                frame = self.seal({**reading, **reports}, **kw)
            except ValueError:
                if not reports:
                    raise
                # The reading leaves no room for the reports (or is itself refused): the
                # reading alone raises then; else the reports follow in a reading of their own.
                frame = self.seal(reading, **kw)
                extra = self.seal(reports, **kw)
            self.link.send(frame)
            if extra is not None:
                self.link.send(extra)
            if reports:
                for k in reports:
                    dl.state.s.reports.pop(k, None)
                dl.state.save()
        return frame

    # -- downlink: desired state and commands (twinlink.downlink) -------------------------------

    def _receiver(self) -> Any:
        if self._downlink is None:
            from . import downlink

            if self._lite or self._sk is None:
                raise RuntimeError("desired state and commands need the device's own key "
                                   "(not a lite bundle)")
            ctx = self.bundle.ack_context(self.id_context, downlink.DOWNLINK_SID)
            kid_context = self.id_context
            state = downlink.DownlinkState(self.state_path.with_suffix(".downlink"))
            self._downlink = downlink.DownlinkReceiver(
                self.kid, state, lambda: (ctx, kid_context), on_event=self._downlink_event)
        # Attach (again: idempotent) to the current link, which may have been set meanwhile.
        attach = getattr(self.link, "set_downlink", None)
        if attach is not None:
            attach(self.handle_downlink)
        return self._downlink

    def _downlink_event(self, kind: str, detail: str) -> None:
        log.warning("%s: %s: %s", self.name, kind, detail)
        if self.on_event is not None:
            self.on_event(kind, detail)

    def on_desired(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``handler(values)`` with the whole desired state each time the twin sends a newer
        version, and once now with the last applied one (desired state is a state: applying it
        again is harmless, and it survives a restart). ``handler`` returns None (all applied) or
        ``{key: reason}`` for keys it rejects, or raises :class:`twinlink.downlink.Rejected`;
        the outcome is reported to the twin in the next telemetry (``tl:desired``,
        ``tl:rejected:<key>``). Runs on the thread that delivers downlink frames."""
        dl = self._receiver()
        with dl.state.lock:
            dl.desired_handler = handler
            reports = dl.apply_desired()
            if reports:
                dl.state.add_reports(reports)
                dl.state.save()
        self._flush_reports()

    def on_command(self, method: str, handler: Callable[[Any], Any]) -> None:
        """Run ``handler(args)`` for each command ``method`` the twin sends, at most once per
        command (even across crashes: see :mod:`twinlink.downlink`); its return value (if not
        None) is reported as the result, :class:`twinlink.downlink.Rejected` or any other
        exception as ``error: <reason>``."""
        from . import downlink

        downlink._check_name(method, "a method")
        self._receiver().commands[method] = handler

    def on_update(self, installer: Callable[[Path, Any], None] | None = None) -> Any:
        """Take firmware updates the twin offers over the downlink (docs/UPDATES.md,
        PROTOCOL.md §21): each offered manifest is checked before any chunk is accepted, the
        image is staged resumably in the state directory and finally handed to
        :func:`twinlink.update.verify_and_record` with ``installer(image_path, manifest)``
        (which must copy or move the image before it returns). Resumes a transfer an earlier
        run left staged and reports its offset. Progress and outcome go to the twin as
        ``tl:update`` reports; ``on_event`` gets ``update.*``. Returns the
        :class:`~twinlink.update.delivery.UpdateDelivery`."""
        from .update.delivery import UpdateDelivery

        dl = self._receiver()
        with dl.state.lock:
            if dl.update_handler is None:
                dl.update_handler = UpdateDelivery(self.bundle, self.state_path.parent,
                                                   installer, on_event=self._update_event)
            dl.update_handler.installer = installer
            reports = dl.update_handler.resume()
            if reports:
                dl.state.add_reports(reports)
                dl.state.save()
        self._flush_reports()
        return dl.update_handler

    def _update_event(self, kind: str, detail: str) -> None:
        (log.warning if kind == "update.rejected" else log.info)("%s: %s: %s", self.name,
                                                                 kind, detail)
        if self.on_event is not None:
            self.on_event(kind, detail)

    def handle_downlink(self, data: bytes) -> dict[str, Any]:
        """Process one downlink frame from any transport and, with a link attached, send its
        reports at once. Returns the reports; raises the frame's :class:`TwinlinkError` if it
        was refused (nothing changed; the device event was raised)."""
        reports = self._receiver().handle(data)
        self._flush_reports()
        return reports

    def _flush_reports(self) -> None:
        dl = self._downlink
        if self.link is not None and dl is not None and dl.state.s.reports \
                and not self._closed:
            try:
                self.send({})
            except TwinlinkError as exc:  # persisted: the next reading carries them
                log.warning("%s: sending downlink reports failed (%s); they ride on the next "
                            "reading", self.name, exc)
            except Exception:
                log.exception("%s: sending downlink reports failed; they ride on the next "
                              "reading", self.name)

    def close(self) -> None:
        """Release the sequence lock (and close the link if it has ``close``)."""
        self._closed = True  # a downlink frame handled meanwhile keeps its reports for later
        self.seq.close()
        close = getattr(self.link, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
