"""The DICOM node: series collection on disk, and the round trip from a sender through chestdx to a PACS (Orthanc)."""

from __future__ import annotations

import json
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
from chestdx.node.collector import STATUS, SeriesCollector  # noqa: E402
from chestdx.node.listener import DicomNode, Peer  # noqa: E402


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


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc (Debian package) on free local ports with a generated configuration and a temporary store."""
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    http_port, dicom_port = _free_port(), _free_port()
    node_port = _free_port()
    config = {"Name": "chestdx-test", "StorageDirectory": str(tmp_path / "orthanc-db"),
              "IndexDirectory": str(tmp_path / "orthanc-db"), "HttpPort": http_port, "DicomPort": dicom_port,
              "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
              "DicomModalities": {"chestdx": {"AET": "CHESTDX", "Host": "127.0.0.1", "Port": node_port}}}
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    with open(tmp_path / "orthanc.log", "w") as logfile:
        process = subprocess.Popen(["Orthanc", str(path)], stdout=logfile, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(100):
            try:
                _get(url + "/system")
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"Orthanc exited: {(tmp_path / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield {"url": url, "peer": Peer("127.0.0.1", dicom_port, "ORTHANC"), "node_port": node_port}
    finally:
        process.terminate()
        process.wait(timeout=30)


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
    assert status["store_statuses"] == [0] * len(status["results"])
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
                                "--port", str(port)], stderr=subprocess.PIPE, text=True, env=env)
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
    node = DicomNode(tmp_path / "store", port=0, quiet_seconds=0.5,
                     return_to=Peer("127.0.0.1", server.server_address[1], "PACS"))
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
        assert damaged["state"] == "failed" and damaged["failure_report"] == "sent", damaged
        assert _send([tiny], node.port) == [0]  # still serving
    finally:
        node.stop()
        server.shutdown()
    assert status["state"] == "failed" and status["failure_report"] == "sent"
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
