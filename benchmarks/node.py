"""Speed of `chestdx node`: instances received per second, and the time from the last instance to the results back.

A generated CT series (``chestdx sample``, 300 slices of 512x512 by default) is sent to a
node in this process with pynetdicom; the node returns its SR, key-slice captures and SEG
to a pynetdicom C-STORE SCP started here (standing in for the PACS: storing five objects is
not what is measured). Figures:

- ``receive_instances_per_s``: instances sent and acknowledged (each written to disk first) per second;
- ``last_instance_to_results_s``: from the last instance acknowledged to the last result
  received by the PACS, less the quiet period (``--complete-after``) the node waits on purpose;
- ``in_process_s``: the same work in process (``diagnose_source`` with ``keep_phi`` and
  ``write_dicom_outputs`` with the lesion segments), models already loaded (the node loads
  both at start), best of ``--repeats``;
- ``node_overhead_s``: the difference (target: at most 2 s).

Usage:
    python benchmarks/node.py [--slices 300] [--size 512] [--complete-after 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from chestdx.io.sample import write_sample_series
from chestdx.node.listener import RESULT_SOP_CLASSES, DicomNode, Peer
from chestdx.outputs.dicom import lesion_model_or_none, write_dicom_outputs
from chestdx.pipeline import diagnose_source
from chestdx.train.loop import cpu_name


def in_process_seconds(folder: Path, out: Path, repeats: int) -> float:
    """Returns: the best time of diagnose + DICOM outputs for the series in ``folder``."""
    times = []
    lesion_model = lesion_model_or_none()  # loaded once, as the node does at start
    for n in range(repeats):
        t0 = time.perf_counter()
        write_dicom_outputs(out / str(n), diagnose_source(folder, keep_phi=True), keep_patient=True,
                            lesion_model=lesion_model)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--complete-after", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chestdx-node-bench-") as tmp:
        tmp = Path(tmp)
        files = write_sample_series(tmp / "ct", n_slices=args.slices, size=args.size, progress=False)
        datasets = [pydicom.dcmread(f) for f in files]
        received, lock = [], threading.Lock()

        def on_result(event):
            with lock:
                received.append(time.perf_counter())
            return 0x0000

        pacs = AE(ae_title="PACS")
        for sop_class in RESULT_SOP_CLASSES:
            pacs.add_supported_context(sop_class)
        server = pacs.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_result)])
        node = DicomNode(tmp / "store", port=0, return_to=Peer("127.0.0.1", server.server_address[1], "PACS"),
                         quiet_seconds=args.complete_after)
        in_process = in_process_seconds(tmp / "ct", tmp / "in-process", args.repeats)
        node.start()
        try:
            sender = AE(ae_title="SENDER")
            sender.add_requested_context(CTImageStorage)
            assoc = sender.associate("127.0.0.1", node.port, ae_title="CHESTDX")
            t0 = time.perf_counter()
            statuses = [assoc.send_c_store(ds).Status for ds in datasets]
            t_last = time.perf_counter()
            assoc.release()
            status_file = tmp / "store" / datasets[0].SeriesInstanceUID / "status.json"
            while not status_file.exists():
                time.sleep(0.05)
            status = json.loads(status_file.read_text())
        finally:
            node.stop()
            server.shutdown()
    assert set(statuses) == {0} and status["state"] == "done", status
    latency = max(received) - t_last - args.complete_after
    print(json.dumps({
        "cpu": cpu_name(), "slices": args.slices, "size": args.size, "results": len(received),
        "receive_instances_per_s": round(len(datasets) / (t_last - t0), 1),
        "last_instance_to_results_s": round(latency, 2), "in_process_s": round(in_process, 2),
        "node_overhead_s": round(latency - in_process, 2), "complete_after_s": args.complete_after}, indent=1))


if __name__ == "__main__":
    main()
