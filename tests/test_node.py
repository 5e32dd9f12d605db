"""The DICOM node: series collection on disk, and the round trip from a sender through chestdx to a PACS (Orthanc)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import (Comprehensive3DSRStorage, CTImageStorage, MRImageStorage,  # noqa: E402
                                  Verification)

from chestdx.errors import ChestDxError  # noqa: E402
from chestdx.io.sample import new_dataset, write_sample_series  # noqa: E402
from chestdx.cli import main  # noqa: E402
from chestdx.node.collector import STATUS, SeriesCollector  # noqa: E402
from chestdx.node.dicomweb import DicomWebPeer  # noqa: E402
from chestdx.node.listener import DicomNode, Peer  # noqa: E402
from chestdx.node.watch import FolderWatcher  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_series_is_complete_after_the_quiet_period_only(tmp_path):
    clock = Clock()
    collector = SeriesCollector(tmp_path, quiet_seconds=5, clock=clock)
    collector.add("1.2.3", "1.2.3.1", b"a")
    clock.now = 4
    collector.add("1.2.3", "1.2.3.2", b"b")
    collector.add("1.2.4", "1.2.4.1", b"c")
    clock.now = 8.9
    assert collector.complete() == []
    clock.now = 9
    assert collector.complete() == [tmp_path / "1.2.3", tmp_path / "1.2.4"]
    assert collector.complete() == [] and collector.pending == 0
    assert sorted(p.name for p in (tmp_path / "1.2.3" / "images").iterdir()) == ["1.2.3.1.dcm", "1.2.3.2.dcm"]


def test_unfinished_series_are_picked_up_after_a_restart_and_late_instances_reopen_a_series(tmp_path):
    collector = SeriesCollector(tmp_path, quiet_seconds=0)
    collector.add("1.2.3", "1.2.3.1", b"a")
    collector.add("1.2.5", "1.2.5.1", b"a")
    (tmp_path / "1.2.5" / STATUS).write_text("{}")  # processed before the restart
    restarted = SeriesCollector(tmp_path, quiet_seconds=0)
    assert restarted.complete() == [tmp_path / "1.2.3"]
    restarted.add("1.2.5", "1.2.5.2", b"b")
    assert not (tmp_path / "1.2.5" / STATUS).exists() and restarted.complete() == [tmp_path / "1.2.5"]


def test_uids_from_the_network_cannot_escape_the_store(tmp_path):
    collector = SeriesCollector(tmp_path / "store", quiet_seconds=0)
    path = collector.add("../../evil", "../x", b"a")
    assert path.resolve().is_relative_to((tmp_path / "store").resolve())


def test_return_to_must_be_host_port_aet():
    assert Peer.parse("127.0.0.1:4242:ORTHANC") == Peer("127.0.0.1", 4242, "ORTHANC")
    with pytest.raises(ChestDxError, match="HOST:PORT:AET"):
        Peer.parse("ORTHANC@127.0.0.1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, auth: tuple[str, str] | None = None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _dicomweb_plugin() -> str | None:
    """The .so of Orthanc's DICOMweb plugin, as the Debian package orthanc-dicomweb installs it, or None."""
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True).stdout
    except OSError:  # no dpkg
        return None
    found = [line for line in listed.splitlines() if "/plugins/" in line and line.endswith(".so")]
    return found[0] if found and Path(found[0]).exists() else None


@pytest.fixture
def start_orthanc(tmp_path):
    """Starts Orthanc (Debian package) on free local ports with a generated configuration and a temporary store.

    ``start_orthanc(dicomweb=True, users={"alice": "pw"})`` loads the DICOMweb plugin (Debian
    orthanc-dicomweb) and turns on HTTP basic authentication.
    """
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    processes = []

    def start(dicomweb: bool = False, users: dict | None = None) -> dict:
        plugins = []
        if dicomweb:
            plugin = _dicomweb_plugin()
            if plugin is None:
                reason = "Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb; make test installs it)"
                if os.environ.get("CI"):
                    pytest.fail(reason)
                pytest.skip(reason)
            plugins.append(plugin)
        http_port, dicom_port = _free_port(), _free_port()
        node_port = _free_port()
        folder = tmp_path / f"orthanc-{len(processes)}"
        config = {"Name": "chestdx-test", "StorageDirectory": str(folder / "db"),
                  "IndexDirectory": str(folder / "db"), "HttpPort": http_port, "DicomPort": dicom_port,
                  "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
                  "RegisteredUsers": users or {}, "Plugins": plugins,
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                  "DicomModalities": {"chestdx": {"AET": "CHESTDX", "Host": "127.0.0.1", "Port": node_port}}}
        folder.mkdir()
        (folder / "orthanc.json").write_text(json.dumps(config))
        with open(folder / "orthanc.log", "w") as logfile:
            process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=logfile,
                                       stderr=subprocess.STDOUT)
        processes.append(process)
        url = f"http://127.0.0.1:{http_port}"
        auth = next(iter(users.items())) if users else None
        for _ in range(200):
            try:
                _get(url + "/system", auth)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
        return {"url": url, "peer": Peer("127.0.0.1", dicom_port, "ORTHANC"), "node_port": node_port, "auth": auth,
                "log": folder / "orthanc.log"}

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def orthanc(start_orthanc):
    """Orthanc on 127.0.0.1 without plugins or authentication."""
    return start_orthanc()


def _send(files, port, sop_class=CTImageStorage):
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHESTDX")
    assert assoc.is_established
    statuses = [assoc.send_c_store(pydicom.dcmread(f)).Status for f in files]
    assoc.release()
    return statuses


def _wait_for_status(folder: Path, seconds: float = 240) -> dict:
    for _ in range(int(seconds / 0.25)):
        if (folder / STATUS).exists():
            return json.loads((folder / STATUS).read_text())
        time.sleep(0.25)
    raise AssertionError(f"no status in {folder} after {seconds} s")


@pytest.mark.parametrize("sender", ["pynetdicom", "orthanc"])
def test_round_trip_through_chestdx_into_orthanc(orthanc, tmp_path, sender):
    files = write_sample_series(tmp_path / "ct", n_slices=24, size=128, seed=2, progress=False)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    for f in files:  # the PACS holds the study's images
        request = urllib.request.Request(orthanc["url"] + "/instances", data=f.read_bytes(), method="POST")
        urllib.request.urlopen(request, timeout=10).close()
    node = DicomNode(tmp_path / "store", port=orthanc["node_port"], return_to=orthanc["peer"], quiet_seconds=1.0)
    node.start()
    try:
        if sender == "pynetdicom":
            assert set(_send(files, node.port)) == {0}
        else:  # the PACS pushes the study to the node registered as its modality "chestdx"
            lookup = _get_post(orthanc["url"] + "/tools/lookup", source.StudyInstanceUID)
            pushed = _get_post(orthanc["url"] + "/modalities/chestdx/store", lookup[0]["ID"])
            assert pushed["InstancesCount"] == len(files) and pushed["FailedInstancesCount"] == 0
        status = _wait_for_status(tmp_path / "store" / source.SeriesInstanceUID)
    finally:
        node.stop()
    assert status["state"] == "done", status
    assert status["sent"] == {str(orthanc["peer"]): {"stored": len(status["results"])}}
    found = _get_post(orthanc["url"] + "/tools/lookup", source.StudyInstanceUID)
    study_id = next(item["ID"] for item in found if item["Type"] == "Study")
    series = [_get(f"{orthanc['url']}/series/{s}") for s in _get(f"{orthanc['url']}/studies/{study_id}")["Series"]]
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
    assert modalities == ["CT", "OT", "SEG", "SR"]
    patient = _get(f"{orthanc['url']}/studies/{study_id}/patient")
    assert patient["MainDicomTags"]["PatientID"] == source.PatientID and len(_get(orthanc["url"] + "/patients")) == 1
    sr_series = next(s for s in series if s["MainDicomTags"]["Modality"] == "SR")
    sr_file = urllib.request.urlopen(f"{orthanc['url']}/instances/{sr_series['Instances'][0]}/file", timeout=10).read()
    sr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(sr_file))
    uids = {f_ds.SOPInstanceUID for f_ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    referenced = {r.ReferencedSOPInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                  for s in e.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    assert referenced and referenced <= uids


def _get_post(url: str, body: str):
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_node_answers_echo_refuses_mr_and_keeps_serving_after_a_bad_series(tmp_path):
    node = DicomNode(tmp_path / "store", port=0, quiet_seconds=0.5)
    node.start()
    try:
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(Verification)
        ae.add_requested_context(MRImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CHESTDX")
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        mr = new_dataset(np.zeros((32, 32), np.int16), modality="MR")
        with pytest.raises(ValueError):  # no accepted presentation context for MR
            assoc.send_c_store(mr)
        assoc.release()
        tiny = tmp_path / "tiny.dcm"  # an 8x8 CT image: chestdx cannot read it
        new_dataset(np.zeros((8, 8), np.int16), modality="CT").save_as(tiny, enforce_file_format=True)
        assert _send([tiny], node.port) == [0]
        status = _wait_for_status(tmp_path / "store" / pydicom.dcmread(tiny).SeriesInstanceUID, seconds=60)
        assert status["state"] == "failed" and "too small" in status["error"]
        nameless = tmp_path / "nameless.dcm"  # no SeriesInstanceUID: refused with a failure status
        ds = new_dataset(np.zeros((32, 32), np.int16), modality="CT")
        del ds.SeriesInstanceUID
        ds.save_as(nameless, enforce_file_format=True)
        assert _send([nameless], node.port) == [0xC000]
        assert _send([tiny], node.port) == [0]  # still serving
    finally:
        node.stop()


def test_chestdx_node_command_answers_echo_and_stops_on_sigterm(tmp_path):
    import os
    import signal
    import sys

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "chestdx.cli", "node", "--store-dir", str(tmp_path / "store"),
                                "--port", str(port), "--no-lesions"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(Verification)
        for _ in range(240):
            assoc = ae.associate("127.0.0.1", port, ae_title="CHESTDX")
            if assoc.is_established:
                break
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.25)
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode in (0, 128 + signal.SIGTERM)
    assert f"listening as CHESTDX on 127.0.0.1:{port}" in stderr and "Traceback" not in stderr
    assert "segmentation: lungs\n" in stderr  # --no-lesions


def test_only_allowed_callers_associate_and_only_allowed_hosts_store(tmp_path):
    node = DicomNode(tmp_path / "store", port=0, quiet_seconds=60, allowed_callers=["PACS"])
    node.start()
    try:
        for calling, established in (("SENDER", False), ("PACS", True)):
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", node.port, ae_title="CHESTDX")
            assert assoc.is_established is established
            if established:
                assert assoc.send_c_echo().Status == 0
                assoc.release()
            else:
                assert assoc.is_rejected
    finally:
        node.stop()
    node = DicomNode(tmp_path / "store", port=0, quiet_seconds=60, allowed_hosts=["192.0.2.1"])
    node.start()
    try:
        slice_ = tmp_path / "slice.dcm"
        new_dataset(np.zeros((32, 32), np.int16), modality="CT").save_as(slice_, enforce_file_format=True)
        assert _send([slice_], node.port) == [0x0124]  # refused: not authorized
        series = tmp_path / "store" / pydicom.dcmread(slice_).SeriesInstanceUID
        assert not series.exists()
        node.allowed_hosts = {"127.0.0.1"}
        assert _send([slice_], node.port) == [0]
        assert series.exists()
    finally:
        node.stop()
    with pytest.raises(ChestDxError, match="1 to 16 characters"):
        DicomNode(tmp_path / "store", port=0, allowed_callers=["A" * 17])


def test_a_series_that_fails_is_reported_back_as_an_sr_with_the_reason(tmp_path):
    received = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(Comprehensive3DSRStorage)
    server = pacs.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    dead = DicomWebPeer.parse(f"http://127.0.0.1:{_free_port()}/dicom-web")  # nothing listens there
    dead = dataclasses.replace(dead, attempts=1)
    node = DicomNode(tmp_path / "store", port=0, quiet_seconds=0.5,
                     return_to=Peer("127.0.0.1", server.server_address[1], "PACS"), dicomweb=dead)
    node.start()
    try:
        tiny = tmp_path / "tiny.dcm"  # an 8x8 CT image: chestdx cannot read it
        source = new_dataset(np.zeros((8, 8), np.int16), modality="CT")
        source.PatientName, source.PatientID = "Doe^Jane", "P123"
        source.save_as(tiny, enforce_file_format=True)
        assert _send([tiny], node.port) == [0]
        status = _wait_for_status(tmp_path / "store" / source.SeriesInstanceUID, seconds=60)
        studyless = tmp_path / "studyless.dcm"  # no StudyInstanceUID: no failure SR could be filed, so refused at once
        ds = new_dataset(np.zeros((8, 8), np.int16), modality="CT")
        del ds.StudyInstanceUID
        ds.save_as(studyless, enforce_file_format=True)
        assert _send([studyless], node.port) == [0xC000]
        assert not (tmp_path / "store" / ds.SeriesInstanceUID).exists()
        unnamed = tmp_path / "unnamed.dcm"  # a patient name pydicom cannot decode: the failure SR is sent without it
        ds = new_dataset(np.zeros((8, 8), np.int16), modality="CT")
        ds.PatientName = "Doe^John"
        ds.save_as(unnamed, enforce_file_format=True)
        raw = bytearray(unnamed.read_bytes())
        at = raw.index(b"\x10\x00\x10\x00PN")
        raw[at + 4:at + 6] = b"LX"  # an unknown value representation
        unnamed.write_bytes(bytes(raw))
        sender = AE(ae_title="SENDER")
        sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # the raw element is sent as it is
        assoc = sender.associate("127.0.0.1", node.port, ae_title="CHESTDX")
        assert assoc.send_c_store(pydicom.dcmread(unnamed)).Status == 0
        assoc.release()
        damaged = _wait_for_status(tmp_path / "store" / ds.SeriesInstanceUID, seconds=60)
        assert damaged["state"] == "failed" and damaged["failure_report"] == "results/failure_sr.dcm", damaged
        assert damaged["failure_report_sent"] == {str(node.return_to): "sent",
                                                  str(dead): f"not sent: could not reach {dead}: ConnectionError"}
        assert _send([tiny], node.port) == [0]  # still serving
    finally:
        node.stop()
        server.shutdown()
    assert status["state"] == "failed" and status["failure_report"] == "results/failure_sr.dcm"
    assert status["failure_report_sent"] == {str(node.return_to): "sent",
                                             str(dead): f"not sent: could not reach {dead}: ConnectionError"}
    assert len(received) == 2
    sr = received[0]
    assert sr.SOPClassUID == Comprehensive3DSRStorage and sr.StudyInstanceUID == source.StudyInstanceUID
    assert str(sr.PatientName) == "Doe^Jane" and sr.PatientID == "P123"  # filed under the source's patient
    texts = [item.TextValue for item in _items(sr) if "TextValue" in item]
    assert any("too small" in text for text in texts)
    meanings = [item.ConceptCodeSequence[0].CodeMeaning for item in _items(sr) if "ConceptCodeSequence" in item]
    assert "Could not be processed" in meanings
    refs = [r.ReferencedSOPInstanceUID for item in _items(sr) for r in item.get("ReferencedSOPSequence", [])]
    assert source.SOPInstanceUID in refs
    kept = tmp_path / "store" / source.SeriesInstanceUID / "results" / "failure_sr.dcm"
    if shutil.which("dciodvfy"):  # installed by make test (Debian dicom3tools)
        result = subprocess.run(["dciodvfy", str(kept)], capture_output=True, text=True)
        assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == []


def _items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def test_results_go_by_dicomweb_into_orthanc_and_by_c_store_besides(start_orthanc, tmp_path):
    from dicomweb_client.api import DICOMwebClient
    import requests

    hd = pytest.importorskip("highdicom")
    orthanc = start_orthanc(dicomweb=True, users={"chestdx": "s3cret!"})
    received = []
    pacs = AE(ae_title="PACS")  # a second destination, by C-STORE
    for sop_class in ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.66.4"):
        pacs.add_supported_context(sop_class)
    server = pacs.start_server(("127.0.0.1", 0), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(event.dataset) or 0)])
    files = write_sample_series(tmp_path / "ct", n_slices=24, size=128, seed=2, progress=False)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    web = DicomWebPeer.parse(orthanc["url"].replace("http://", "http://chestdx:s3cret%21@") + "/dicom-web/")
    node = DicomNode(tmp_path / "store", port=0, return_to=Peer("127.0.0.1", server.server_address[1], "PACS"),
                     dicomweb=web, quiet_seconds=1.0)
    node.start()
    try:
        assert set(_send(files, node.port)) == {0}
        status = _wait_for_status(tmp_path / "store" / source.SeriesInstanceUID)
    finally:
        node.stop()
        server.shutdown()
    assert status["state"] == "done", status
    n = len(status["results"])
    assert status["sent"] == {str(node.return_to): {"stored": n}, str(web): {"stored": n}}
    assert len(received) == n and "s3cret" not in (tmp_path / "store" / source.SeriesInstanceUID / STATUS).read_text()
    session = requests.Session()
    session.auth = orthanc["auth"]
    client = DICOMwebClient(url=orthanc["url"] + "/dicom-web", session=session)
    found = client.search_for_series(search_filters={"StudyInstanceUID": source.StudyInstanceUID})  # QIDO-RS
    by_modality = {item["00080060"]["Value"][0]: item["0020000E"]["Value"][0] for item in found}
    assert sorted(by_modality) == ["OT", "SEG", "SR"]
    instances = {m: client.search_for_instances(source.StudyInstanceUID, uid) for m, uid in by_modality.items()}
    seg_uid = instances["SEG"][0]["00080018"]["Value"][0]
    seg = hd.seg.Segmentation.from_dataset(client.retrieve_instance(source.StudyInstanceUID, by_modality["SEG"],
                                                                    seg_uid))  # WADO-RS
    assert seg.StudyInstanceUID == source.StudyInstanceUID and str(seg.PatientID) == source.PatientID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lung", "ground-glass opacity", "consolidation"]
    sources = {f_ds.SOPInstanceUID for f_ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= sources
    sr_uid = instances["SR"][0]["00080018"]["Value"][0]
    sr = client.retrieve_instance(source.StudyInstanceUID, by_modality["SR"], sr_uid)
    referenced = {r.ReferencedSOPInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                  for s in e.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    assert referenced and referenced <= sources
    with pytest.raises(ChestDxError, match="HTTP 401"):  # wrong password: refused, said so
        DicomWebPeer(web.url, "chestdx", "wrong").send([tmp_path / "store" / source.SeriesInstanceUID / "results" / "sr.dcm"])


def test_dicomweb_url_must_be_http_and_its_password_stays_out_of_messages():
    peer = DicomWebPeer.parse("https://ai:p%40ss@pacs.example:8443/dicom-web/")
    assert (peer.url, peer.username, peer.password) == ("https://pacs.example:8443/dicom-web", "ai", "p@ss")
    assert "p@ss" not in str(peer) and "p@ss" not in repr(peer)
    for bad in ("pacs.example/dicom-web", "ftp://pacs.example/", "http://ai:secret@pacs.example:port/"):
        with pytest.raises(ChestDxError, match="not an http") as error:
            DicomWebPeer.parse(bad)
        assert "secret" not in str(error.value)


def _instance_bytes(series_uid: str, tmp_path: Path) -> bytes:
    path = tmp_path / f"one-{series_uid}.dcm"
    new_dataset(np.zeros((32, 32), np.int16), modality="CT", SeriesInstanceUID=series_uid).save_as(
        path, enforce_file_format=True)
    data = path.read_bytes()
    path.unlink()
    return data


def test_watcher_takes_settled_dicom_files_waits_for_copies_and_rejects_the_rest(tmp_path):
    clock, inbox = Clock(), tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    collector = SeriesCollector(tmp_path / "store", quiet_seconds=3, clock=clock)
    watcher = FolderWatcher(inbox, collector, settle_seconds=2, give_up_seconds=10, clock=clock)
    whole, later = _instance_bytes("1.2.3", tmp_path), _instance_bytes("1.2.3", tmp_path)
    (inbox / "sub" / "a.dcm").write_bytes(whole)
    (inbox / "b.dcm").write_bytes(later[:len(later) // 2])  # still being copied: its pixel data cut off
    (inbox / "notes.txt").write_text("not an image")
    (inbox / "c.dcm.part").write_bytes(whole)  # a copy tool's temporary name: left alone
    assert watcher.poll() == {"taken": 0, "rejected": 0}  # first seen
    clock.now = 1.9
    assert watcher.poll() == {"taken": 0, "rejected": 0}  # not settled yet
    clock.now = 2.0
    assert watcher.poll() == {"taken": 1, "rejected": 0}
    assert not (inbox / "sub" / "a.dcm").exists() and len(list((tmp_path / "store" / "1.2.3" / "images").iterdir())) == 1
    clock.now = 4.0
    (inbox / "b.dcm").write_bytes(later)  # the copy finishes
    assert watcher.poll() == {"taken": 0, "rejected": 0}  # changed: settles again
    assert collector.complete() == []  # a.dcm arrived 2 s ago
    clock.now = 6.0
    assert watcher.poll() == {"taken": 1, "rejected": 0}
    assert len(list((tmp_path / "store" / "1.2.3" / "images").iterdir())) == 2
    clock.now = 8.9
    assert collector.complete() == []  # 2.9 s after the last instance
    clock.now = 10.0
    assert watcher.poll() == {"taken": 0, "rejected": 1}  # notes.txt, unchanged for 10 s
    assert collector.complete() == [tmp_path / "store" / "1.2.3"]
    [report] = (tmp_path / "store" / "rejected").glob("*.json")
    details = json.loads(report.read_text())
    assert details["file"] == "notes.txt" and details["error"].startswith("not a DICOM file")
    assert (tmp_path / "store" / "rejected" / details["kept_as"]).read_text() == "not an image"
    assert sorted(p.name for p in inbox.rglob("*") if p.is_file()) == ["c.dcm.part"]


def test_watcher_rejects_a_cut_off_dicom_file_that_never_finishes(tmp_path):
    clock, inbox = Clock(), tmp_path / "inbox"
    inbox.mkdir()
    collector = SeriesCollector(tmp_path / "store", quiet_seconds=3, clock=clock)
    watcher = FolderWatcher(inbox, collector, settle_seconds=1, give_up_seconds=5, clock=clock)
    data = _instance_bytes("1.2.9", tmp_path)
    (inbox / "cut.dcm").write_bytes(data[:-100])
    (inbox / "nouid.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")  # preamble, then junk
    for t in (0, 1, 4.9):
        clock.now = t
        assert watcher.poll() == {"taken": 0, "rejected": 0}
    clock.now = 5
    assert watcher.poll() == {"taken": 0, "rejected": 2}
    errors = sorted(json.loads(p.read_text())["error"] for p in (tmp_path / "store" / "rejected").glob("*.json"))
    assert errors[0].startswith("a DICOM file") and "cut off" in errors[1], errors
    assert not (tmp_path / "store" / "1.2.9").exists() and not list(inbox.iterdir())


def test_folder_mode_diagnoses_dropped_series_survives_junk_and_restarts_without_redoing(tmp_path):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    files = write_sample_series(tmp_path / "ct", n_slices=24, size=128, seed=3, progress=False)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    node = DicomNode(store, quiet_seconds=3.0, watch_dir=inbox)  # above the 1.5 s pause of the slow copy
    node.start()
    try:
        (inbox / "study").mkdir()
        for f in files[:12]:
            shutil.copy(f, inbox / "study" / f.name)
        slow = inbox / "study" / files[12].name  # copied in two halves, 1.5 s apart
        data = files[12].read_bytes()
        slow.write_bytes(data[:len(data) // 2])
        (inbox / "report.pdf").write_bytes(b"%PDF-1.4 not a DICOM file")
        time.sleep(1.5)
        with open(slow, "ab") as out:
            out.write(data[len(data) // 2:])
        for f in files[13:]:
            shutil.copy(f, inbox / "study" / f.name)
        status = _wait_for_status(store / source.SeriesInstanceUID, seconds=120)
        for _ in range(150):  # the junk is rejected once unchanged for 10 s
            if list((store / "rejected").glob("*.json")) if (store / "rejected").exists() else []:
                break
            time.sleep(0.1)
    finally:
        node.stop()
    assert status["state"] == "done", status
    assert status["n_slices"] == 24 and status["sent"] == {}
    results = store / source.SeriesInstanceUID / "results"
    assert {"sr.dcm", "seg.dcm", "prediction.json"} <= {p.name for p in results.iterdir()}
    assert json.loads((results / "prediction.json").read_text())["decision"] == status["decision"]
    assert not [p for p in inbox.rglob("*") if p.is_file()]  # everything was taken or rejected
    [report] = (store / "rejected").glob("*.json")
    assert json.loads(report.read_text())["file"] == "report.pdf"
    # a restart: the done series is not redone, an unfinished one (images in the store, no status) is
    done_status = (store / source.SeriesInstanceUID / STATUS).read_text()
    unfinished = write_sample_series(tmp_path / "ct2", n_slices=24, size=128, seed=4, progress=False)
    pending = store / pydicom.dcmread(unfinished[0], stop_before_pixels=True).SeriesInstanceUID / "images"
    pending.mkdir(parents=True)
    for f in unfinished:
        shutil.copy(f, pending / f.name)
    (pending / "half.part").write_bytes(b"left by a copy the stopped node did not finish")
    node = DicomNode(store, quiet_seconds=0.5, watch_dir=inbox)
    node.start()
    try:
        again = _wait_for_status(pending.parent, seconds=120)
    finally:
        node.stop()
    assert again["state"] == "done", again
    assert (store / source.SeriesInstanceUID / STATUS).read_text() == done_status


def test_folder_mode_arguments_are_checked_before_any_model_loads(tmp_path, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cases = [(["--watch", str(inbox), "--store-dir", str(tmp_path / "s"), "--allow-ae", "PACS"], "does not listen"),
             (["--watch", str(tmp_path / "missing"), "--store-dir", str(tmp_path / "s")], "no such folder"),
             (["--watch", str(inbox), "--store-dir", str(inbox / "results")], "must not hold one another"),
             (["--watch", str(inbox), "--store-dir", str(tmp_path / "s"), "--dicomweb", "pacs:8042"], "not an http")]
    for args, message in cases:
        assert main(["node", *args]) == 2
        assert message in capsys.readouterr().err
