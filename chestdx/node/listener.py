"""The DICOM node: a C-STORE SCP (or a watched folder) for CT images that diagnoses each complete series and returns DICOM results.

Instances are written to disk before they are acknowledged (`SeriesCollector`); in folder
mode (``watch_dir``) the files dropped into a folder are moved into the same store instead
(`chestdx.node.watch.FolderWatcher`) and nothing listens on the network. A worker thread
takes each series that has gone quiet, reads it with the patient module kept (``keep_phi``:
the results must file under the same patient in the PACS), diagnoses it with the models
loaded once at start-up, writes the SR, key-slice captures and segmentation (lungs, and
lesions when the lesion model is installed) into the series folder and sends them to each
destination: the ``return_to`` node by C-STORE and/or a DICOMweb service by STOW-RS
(`chestdx.node.dicomweb.DicomWebPeer`). Failures are logged by series UID (never by patient
name), recorded in the series' ``status.json`` and reported as an SR that says the series
could not be processed and why (kept in the series folder, sent to each destination that did
not get the results). Access is limited, when asked, to listed calling AE titles (the
association is rejected) and to listed hosts (their instances are refused with "not
authorized" and never written).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, evt
from pynetdicom.sop_class import (CTImageStorage, Comprehensive3DSRStorage, SecondaryCaptureImageStorage,
                                  SegmentationStorage, Verification)

from chestdx.errors import ChestDxError
from chestdx.models.loading import load_model
from chestdx.node.collector import SeriesCollector, write_status
from chestdx.node.dicomweb import DicomWebPeer
from chestdx.outputs.dicom import failure_report, lesion_model_or_none, write_dicom_outputs
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose_source

log = logging.getLogger("chestdx.node")
RESULT_SOP_CLASSES = (Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SegmentationStorage)
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
NOT_AUTHORIZED = 0x0124


@dataclass(frozen=True)
class Peer:
    """A DICOM node to send results to: ``HOST:PORT:AET``."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> "Peer":
        """Args: text: ``HOST:PORT:AET``. Returns: the peer. Raises: ChestDxError: malformed."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[0] or not parts[2]:
            raise ChestDxError(f"--return-to {text!r} is not HOST:PORT:AET (e.g. 127.0.0.1:4242:ORTHANC)")
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def send(self, paths: list[Path], calling_ae: str) -> dict:
        """Store files with C-STORE. Returns: ``{"stored": n}``. Raises: ChestDxError: unreachable, or a failure status."""
        codes = send_files(paths, self, calling_ae)
        if any(c != 0 for c in codes):
            raise ChestDxError(f"{self} answered C-STORE statuses {[hex(c) for c in codes]}")
        return {"stored": len(codes)}


def send_files(paths: list[Path], peer: Peer, calling_ae: str) -> list[int]:
    """Send DICOM files to a peer with C-STORE, over one association.

    Args:
        paths: the files.
        peer: where to.
        calling_ae: our AE title.

    Returns:
        The C-STORE status of each file.

    Raises:
        ChestDxError: the peer refused or could not be reached.
    """
    ae = AE(ae_title=calling_ae)
    for sop_class in RESULT_SOP_CLASSES:
        ae.add_requested_context(sop_class)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        raise ChestDxError(f"could not open an association with {peer}: check --return-to and that the PACS knows "
                           f"{calling_ae}")
    try:
        statuses = []
        for path in paths:
            status = assoc.send_c_store(pydicom.dcmread(path))
            statuses.append(int(status.Status) if status else -1)
    finally:
        assoc.release()
    return statuses


def _readable_header(path: Path) -> pydicom.Dataset:
    """A received instance's header, without pixel data and without the elements that cannot be decoded.

    A damaged element (an unknown value representation in the patient's name, say) must not keep
    the failure report from being made: the report copies what can be read and leaves the rest empty.
    """
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    for tag in list(ds.keys()):
        try:
            ds[tag]  # decodes a raw element
        except Exception:  # noqa: BLE001 (whatever pydicom raises on that element)
            del ds[tag]
    return ds


class DicomNode:
    """A running chestdx DICOM node.

    Args:
        store_dir: where received series and results are kept.
        ae_title: our AE title.
        host: address to listen on.
        port: port to listen on (0: any free port; see ``port`` after ``start``).
        return_to: where to send the results by C-STORE, or None.
        dicomweb: a DICOMweb service to store the results in by STOW-RS, or None. With neither,
            the results stay on disk only.
        model: bundled model name or checkpoint folder (default: the CT model).
        quiet_seconds: a series is complete after this long without a new instance.
        allowed_callers: calling AE titles that may associate (None: any); others are rejected.
        allowed_hosts: peer addresses whose instances are stored (None: any); others get "not authorized".
        lesions: add lesion segments to the segmentation when the lesion model is installed.
        watch_dir: folder mode: take the DICOM files dropped here instead of listening.
    """

    def __init__(self, store_dir: str | Path, *, ae_title: str = "CHESTDX", host: str = "127.0.0.1", port: int = 11112,
                 return_to: Peer | None = None, dicomweb: DicomWebPeer | None = None, model: str | None = None,
                 quiet_seconds: float = 10.0, allowed_callers: list[str] | None = None,
                 allowed_hosts: list[str] | None = None, lesions: bool = True, watch_dir: str | Path | None = None):
        self.allowed_callers = [aet.strip() for aet in allowed_callers] if allowed_callers else None
        self.allowed_hosts = set(allowed_hosts) if allowed_hosts else None
        for aet in self.allowed_callers or []:
            if not 0 < len(aet) <= 16:
                raise ChestDxError(f"allowed AE title {aet!r} is not a DICOM AE title: give 1 to 16 characters")
        self.watch_dir = None if watch_dir is None else Path(watch_dir)
        if self.watch_dir is not None:
            if not self.watch_dir.is_dir():
                raise ChestDxError(f"--watch {self.watch_dir}: no such folder")
            if Path(store_dir).resolve().is_relative_to(self.watch_dir.resolve()) or \
                    self.watch_dir.resolve().is_relative_to(Path(store_dir).resolve()):
                raise ChestDxError(f"--store-dir {store_dir} and --watch {self.watch_dir} must not hold one another: "
                                   "give two separate folders")
        self.collector = SeriesCollector(store_dir, quiet_seconds)
        self.ae_title, self.host, self.port = ae_title, host, port
        self.return_to, self.dicomweb = return_to, dicomweb
        self.destinations = [d for d in (return_to, dicomweb) if d is not None]
        self.model_name = model
        # loaded once per process (load_model keeps it): a broken model stops the node at start
        self.model_label = load_model(model).name
        self.lesion_model = lesion_model_or_none() if lesions else None
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None
        self._watcher: threading.Thread | None = None

    def _on_store(self, event) -> int:
        """C-STORE: write the instance to disk, then acknowledge it."""
        address = event.assoc.requestor.address
        if self.allowed_hosts is not None and address not in self.allowed_hosts:
            log.warning("refused an instance from %s (%s): host not allowed", event.assoc.requestor.ae_title, address)
            return NOT_AUTHORIZED
        try:
            ds = event.dataset
            series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
            # without its study no result (nor the SR saying why there is none) can be filed: refuse it now
            if not (series_uid.strip() and sop_uid.strip() and str(ds.StudyInstanceUID).strip()):
                raise ValueError("an empty UID")
        except Exception as exc:  # whatever the decoder raises on a damaged instance, the sender gets a failure status
            log.warning("refused an instance from %s: %s", event.assoc.requestor.ae_title, type(exc).__name__)
            return CANNOT_UNDERSTAND
        try:
            self.collector.add(series_uid, sop_uid, event.encoded_dataset())
        except OSError as exc:
            log.error("cannot write a received instance to %s: %s", self.collector.store_dir, exc.strerror)
            return OUT_OF_RESOURCES
        return 0x0000

    def start(self) -> None:
        """Listen (or watch the folder) in background threads, and start the worker."""
        self._worker = threading.Thread(target=self._work, name="chestdx-node-worker", daemon=True)
        destinations = ", ".join(map(str, self.destinations)) or f"{self.collector.store_dir} only"
        lesions = f"lungs and lesions ({self.lesion_model.name})" if self.lesion_model else "lungs"
        if self.watch_dir is not None:
            from chestdx.node.watch import FolderWatcher

            watcher = FolderWatcher(self.watch_dir, self.collector, settle_seconds=min(2.0, self.collector.quiet_seconds),
                                    give_up_seconds=max(10.0, self.collector.quiet_seconds))
            self._watcher = threading.Thread(target=self._watch, args=(watcher,), name="chestdx-node-watcher",
                                             daemon=True)
            self._watcher.start()
            self._worker.start()
            log.info("watching %s (series complete after %g s quiet); results in %s and to %s; segmentation: %s",
                     self.watch_dir, self.collector.quiet_seconds, self.collector.store_dir, destinations, lesions)
            return
        ae = AE(ae_title=self.ae_title)
        if self.allowed_callers is not None:
            ae.require_calling_aet = self.allowed_callers
        ae.maximum_pdu_size = 0  # senders may send an instance in one PDU (pynetdicom's 16 kB default cuts a slice in 32)
        ae.add_supported_context(Verification)
        ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server((self.host, self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self._server.server_address[1]
        self._worker.start()
        log.info("listening as %s on %s:%d; results go to %s; callers: %s; hosts: %s; segmentation: %s", self.ae_title,
                 self.host, self.port, destinations, ", ".join(self.allowed_callers) if self.allowed_callers else "any",
                 ", ".join(sorted(self.allowed_hosts)) if self.allowed_hosts else "any", lesions)

    def stop(self) -> None:
        """Stop listening and let the worker finish the series in hand."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._watcher is not None:
            self._watcher.join(timeout=60)
        if self._worker is not None:
            self._worker.join(timeout=60)

    def serve_forever(self) -> None:
        """Start and block until interrupted (Ctrl-C or SIGTERM)."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def _work(self) -> None:
        while not self._stop.is_set():
            for folder in self.collector.complete():
                self.process(folder)
            self._stop.wait(0.2)

    def _watch(self, watcher) -> None:
        while not self._stop.is_set():
            try:
                watcher.poll()
            except Exception:  # an unreadable folder, a full disk: logged, and the next poll tries again
                log.exception("looking at %s failed", self.watch_dir)
            self._stop.wait(0.5)

    def _report_failure(self, folder: Path, error: str, destinations: list) -> tuple[str, dict]:
        """Write an SR saying the series could not be processed and why; send it to the destinations given.

        Returns:
            Where it was written ("results/failure_sr.dcm") or why it could not be, and per
            destination "sent" or why it was not.
        """
        try:
            sources = [_readable_header(path) for path in sorted((folder / "images").glob("*.dcm"))]
            results = folder / "results"
            results.mkdir(parents=True, exist_ok=True)
            path = results / "failure_sr.dcm"
            failure_report(sources, error, self.model_label).save_as(path, enforce_file_format=True)
        except Exception as exc:  # highdicom on whatever the sender left out: the worker keeps going
            log.error("series %s: the failure report could not be built: %s: %s", folder.name, type(exc).__name__, exc)
            reason = f"{type(exc).__name__}: {exc}"
            return f"not built: {reason}", {str(d): f"not sent: {reason}" for d in destinations}
        sent = {}
        for destination in destinations:
            try:
                destination.send([path], self.ae_title)
                sent[str(destination)] = "sent"
            except Exception as exc:  # the network: recorded, the worker keeps going
                log.error("series %s: the failure report could not be sent to %s: %s", folder.name, destination, exc)
                sent[str(destination)] = f"not sent: {exc}"
        return f"results/{path.name}", sent

    def process(self, folder: Path) -> dict:
        """Diagnose one received series, write its DICOM results and send them back.

        Args:
            folder: the series folder in the store.

        Returns:
            The status written to ``status.json``.
        """
        t0 = time.perf_counter()
        results = folder / "results"
        shutil.rmtree(results, ignore_errors=True)
        sent, delivered, paths = {}, [], []
        try:
            diagnosis = diagnose_source(folder / "images", self.model_name, keep_phi=True)
            study = diagnosis.study
            paths = write_dicom_outputs(results, diagnosis, keep_patient=True, lesions=self.lesion_model is not None,
                                        lesion_model=self.lesion_model)
            (results / "prediction.json").write_text(json.dumps(prediction_record(diagnosis), indent=1))
            status = {"state": "done", "decision": diagnosis.decision, "n_slices": study.n_slices,
                      "results": [p.name for p in paths], "sent": sent,
                      "seconds_lesions": round(diagnosis.timing.get("dicom_lesions", 0.0), 3)}
            errors = []
            for destination in self.destinations:
                try:
                    sent[str(destination)] = destination.send(paths, self.ae_title)
                    delivered.append(destination)
                except ChestDxError as exc:
                    sent[str(destination)] = {"error": str(exc)}
                    errors.append(str(exc))
            if errors:
                raise ChestDxError("; ".join(errors))
        except ChestDxError as exc:
            status = {"state": "failed", "error": str(exc)}
        except Exception as exc:  # the node keeps serving whatever one series does
            log.exception("series %s: unexpected error", folder.name)
            status = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        if status["state"] == "failed":
            if not paths:  # no results, or half of them: only the failure report is kept
                shutil.rmtree(results, ignore_errors=True)
            if sent:
                status["sent"] = sent
            status["failure_report"], status["failure_report_sent"] = self._report_failure(
                folder, status["error"], [d for d in self.destinations if d not in delivered])
        status["seconds"] = round(time.perf_counter() - t0, 3)
        write_status(folder, status)
        if status["state"] == "done":
            log.info("series %s: %s, %d result(s) %s in %.1f s", folder.name, status["decision"], len(status["results"]),
                     f"sent to {', '.join(sent)}" if sent else "kept", status["seconds"])
        else:
            log.error("series %s failed: %s", folder.name, status["error"])
        return status
