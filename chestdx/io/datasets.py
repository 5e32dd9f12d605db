"""Dataset adapters: list the studies of a public dataset layout as ``CaseRecord`` rows.

Each adapter returns one record per study (a scan folder, a NIfTI file, an image) with
its label, patient id and ``source`` (the set's short name), sorted by path. Where a
dataset gives no patient id, the fallback id is ``"img:"`` + the image's path relative to
the dataset root without its suffix, so each such image is its own group when splitting
(the UCSD adapter groups the ``N%k`` sub-images of one source figure together; the Soares
adapter groups look-alike neighbouring slices, ids ``"soares-group:..."``).

Labels of the older adapters (kept; ``chestdx.io.labels`` maps them onto the shared
space): ``"covid"``, ``"pneumonia"`` (non-COVID pneumonia of a CT dataset),
``"other-pneumonia"`` (ieee8023 X-ray), ``"non-covid"`` (UCSD), ``"normal"``, ``"disease"``
(NIH ChestX-ray14: any finding); ``csv_list`` keeps the CSV's own labels.

The newer adapters emit the shared labels ``normal``, ``other-pneumonia``, ``covid-19``,
``other-disease`` directly (source in brackets; ``group`` keeps the set's own sub-class):

============================  ==================================================================
adapter (source)              set's class -> shared label
============================  ==================================================================
``soares`` (soares)           COVID -> covid-19; non-COVID -> other-disease (other findings *or*
                              normal lungs: usable for COVID-19 vs rest only; group "non-COVID")
``mosmed-slices`` (mosmed)    CT-0 -> normal; CT-1, CT-2plus -> covid-19 (group = folder)
``cc-ccii`` (cc-ccii)         Normal -> normal, CP -> pneumonia, NCP -> covid (old labels; also
                              reads ``ct-cc-ccii-normal``)
``covid19-radiography``       COVID -> covid-19; Normal -> normal; Viral Pneumonia ->
(covid19-radiography)         other-pneumonia; Lung_Opacity -> other-disease
``nih-pneumonia`` (nih)       Pneumonia -> other-pneumonia; No_findings -> normal
``kermany`` (kermany)         Normal -> normal; BacterialPneumonia, ViralPneumonia ->
                              other-pneumonia (group "bacterial" / "viral"); children
============================  ==================================================================
"""
from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.io.images import IMAGE_SUFFIXES, natural_parts
from chestdx.io.load import DICOM_SUFFIXES
from chestdx.io.lookalike import ordered_lookalike_groups
from chestdx.io.nifti import is_nifti

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CaseRecord:
    """One study of a dataset.

    Args:
        path: what ``load_study`` reads (a folder, a NIfTI file or an image).
        label: class name.
        patient_id: never empty; a dataset's own id, or an ``"img:..."`` fallback.
        group: extra grouping (e.g. MosMedData severity ``"CT-2"``), or None.
        split: the dataset's official split (``"train"``, ``"val"``, ``"test"``), or None.
        source: the set it comes from (``"soares"``, ``"mosmed"``, ``"nih"``, ...), used to
            stratify splits and to report per source; None where unknown.
    """

    path: Path
    label: str
    patient_id: str
    group: str | None = None
    split: str | None = None
    source: str | None = None


def fallback_patient_id(path: Path, root: Path) -> str:
    """Returns: ``"img:"`` + the path relative to ``root`` without suffixes (used when a dataset has no patient id)."""
    relative = path.relative_to(root).as_posix()
    return "img:" + re.sub(r"(\.nii)?\.[A-Za-z0-9]+$", "", relative)


def _require_dir(root: Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ChestDxError(f"{root} is not a folder: give the root folder of the {what} dataset")
    return root


def _by_name(path: Path) -> tuple:
    return natural_parts(path.name)


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_by_name)


def _is_study_file(path: Path) -> bool:
    lower = path.name.lower()
    return path.is_file() and not path.name.startswith(".") and (
        lower.endswith(IMAGE_SUFFIXES) or lower.endswith(DICOM_SUFFIXES) or is_nifti(path) or lower.endswith(".zip"))


def folder_per_class(root) -> list[CaseRecord]:
    """One sub-folder per class; each file (image, DICOM, NIfTI, zip) or sub-folder in it is one study.

    Args:
        root: folder holding ``CLASS/STUDY`` entries.

    Returns:
        Records labelled with the class folder's name; patient id = the fallback id
        (each study its own patient); source = the root folder's name.
    """
    root = _require_dir(root, "folder-per-class")
    records = []
    for class_dir in _subdirs(root):
        for entry in sorted(class_dir.iterdir(), key=_by_name):
            if (entry.is_dir() and not entry.name.startswith(".")) or _is_study_file(entry):
                records.append(CaseRecord(entry, class_dir.name, fallback_patient_id(entry, root), source=root.name))
    return records


def _read_split_files(root: Path, classes: dict[str, str]) -> dict[tuple[str, str], str]:
    """Map (class folder, file name) to the official split from ``splits/{split}_{CLASS}.txt``."""
    splits = {}
    for split in SPLITS:
        for tag, folder in classes.items():
            split_file = root / "splits" / f"{split}_{tag}.txt"
            if not split_file.is_file():
                continue
            for line in split_file.read_text().splitlines():
                if line.strip():
                    splits[(folder, line.strip())] = split
    return splits


def ucsd_covid_ct(root) -> list[CaseRecord]:
    """UCSD COVID-CT: ``images/CT_COVID`` and ``images/CT_NonCOVID`` slices.

    Split from the official ``splits/{train,val,test}_{COVID,NonCOVID}.txt``; patient id
    from ``covid_meta.csv`` (matched by file name, or by name without suffix) for COVID
    images. Non-COVID images have none: fallback ``img:CT_NonCOVID/<figure>``, where the
    ``%k`` sub-images of one figure share one id.

    Args:
        root: the dataset folder.

    Returns:
        Records labelled ``"covid"`` / ``"non-covid"``.
    """
    root = _require_dir(root, "UCSD COVID-CT")
    classes = {"COVID": "CT_COVID", "NonCOVID": "CT_NonCOVID"}
    images = root / "images"
    if not all((images / folder).is_dir() for folder in classes.values()):
        raise ChestDxError(f"{root} does not have the UCSD COVID-CT layout (images/CT_COVID, images/CT_NonCOVID)")
    patients = {}
    meta = root / "covid_meta.csv"
    if meta.is_file():
        with open(meta, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                name, patient = (row.get("file_name") or "").strip(), (row.get("patient_id") or "").strip()
                if name and patient:
                    patients[name] = patient
    splits = _read_split_files(root, classes)
    records, seen = [], set()
    for tag, folder in classes.items():
        label = "covid" if tag == "COVID" else "non-covid"
        for path in sorted((images / folder).iterdir(), key=_by_name):
            if not path.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            seen.add((folder, path.name))
            patient = patients.get(path.name) or patients.get(path.stem)
            if not patient:
                patient = "img:" + folder + "/" + path.stem.split("%")[0]
            records.append(CaseRecord(path, label, patient, split=splits.get((folder, path.name)), source="ucsd"))
    missing = sorted(set(splits) - seen)
    if missing:
        raise ChestDxError(f"{len(missing)} file(s) named in {root / 'splits'} are not in images/ (e.g. "
                           f"{missing[0][0]}/{missing[0][1]}): the copy of the dataset is incomplete")
    return records


CC_CCII_LABELS = {"NCP": "covid", "CP": "pneumonia", "Normal": "normal"}


def cc_ccii(root) -> list[CaseRecord]:
    """CC-CCII: ``CLASS/PATIENT/SCAN/NNNN.png`` with CLASS NCP (COVID-19), CP (other pneumonia), Normal.

    Args:
        root: the dataset folder.

    Returns:
        One record per scan folder; patient id ``CLASS/PATIENT``.
    """
    root = _require_dir(root, "CC-CCII")
    records = []
    for class_dir in _subdirs(root):
        label = CC_CCII_LABELS.get(class_dir.name)
        if label is None:
            log.warning("CC-CCII: skipped folder %s (classes are %s)", class_dir.name, ", ".join(CC_CCII_LABELS))
            continue
        for patient_dir in _subdirs(class_dir):
            for scan_dir in _subdirs(patient_dir):
                records.append(CaseRecord(scan_dir, label, f"{class_dir.name}/{patient_dir.name}", source="cc-ccii"))
    return records


def mosmeddata(root) -> list[CaseRecord]:
    """MosMedData: ``CT-0`` ... ``CT-4`` folders of NIfTI studies (also under ``studies/``).

    CT-0 is normal, CT-1..CT-4 COVID-19 of rising severity (kept in ``group``). Each
    study is one patient; patient id = the study file name without suffix.

    Args:
        root: the dataset folder.

    Returns:
        Records labelled ``"normal"`` / ``"covid"``.
    """
    root = _require_dir(root, "MosMedData")
    base = root / "studies" if (root / "studies").is_dir() else root
    records = []
    for k in range(5):
        folder = base / f"CT-{k}"
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=_by_name):
            if is_nifti(path):
                stem = re.sub(r"\.nii(\.gz)?$", "", path.name, flags=re.IGNORECASE)
                records.append(CaseRecord(path, "normal" if k == 0 else "covid", f"mosmed:{stem}", group=f"CT-{k}",
                                          source="mosmed"))
    return records


COVID_CT_MD_LABELS = {"COVID-19 subjects": "covid", "Cap subjects": "pneumonia", "Normal subjects": "normal"}


def covid_ct_md(root) -> list[CaseRecord]:
    """COVID-CT-MD: class folders ``COVID-19 subjects``, ``Cap subjects``, ``Normal subjects``, one DICOM series per patient folder.

    Args:
        root: the dataset folder.

    Returns:
        One record per patient folder; patient id ``CLASS FOLDER/PATIENT``.
    """
    root = _require_dir(root, "COVID-CT-MD")
    records = []
    for folder, label in COVID_CT_MD_LABELS.items():
        class_dir = root / folder
        if class_dir.is_dir():
            records.extend(CaseRecord(p, label, f"{folder}/{p.name}", source="covid-ct-md") for p in _subdirs(class_dir))
    return records


def ieee8023_label(finding: str) -> str | None:
    """Map an ieee8023 ``finding`` to a label.

    Args:
        finding: e.g. ``"COVID-19"``, ``"COVID-19, ARDS"``, ``"SARS"``, ``"No Finding"``.

    Returns:
        ``"covid"``, ``"normal"``, ``"other-pneumonia"`` (any other infection or ARDS), or
        None for an unknown / pending finding.
    """
    text = finding.strip()
    if not text or text.lower() in ("todo", "unknown"):
        return None
    if "covid-19" in text.lower():
        return "covid"
    if text.lower() == "no finding":
        return "normal"
    return "other-pneumonia"


def ieee8023_xray(root) -> list[CaseRecord]:
    """ieee8023 COVID-19 image data collection: ``metadata.csv`` and ``images/``.

    Keeps frontal views only (PA, AP, AP Supine, AP semi erect). Findings with "COVID-19"
    -> covid, "No Finding" -> normal, other infections / ARDS -> other-pneumonia.

    Args:
        root: the folder holding ``metadata.csv`` and ``images/``.

    Returns:
        One record per image; patient id ``ieee8023:<patient_id>``.
    """
    root = _require_dir(root, "ieee8023 X-ray")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ChestDxError(f"{meta} not found: give the folder holding metadata.csv and images/")
    records, missing = [], []
    with open(meta, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            view = (row.get("view") or "").strip().upper()
            label = ieee8023_label(row.get("finding") or "")
            if not view.startswith(("PA", "AP")) or label is None:
                continue
            path = root / "images" / (row.get("filename") or row.get("image") or "").strip()
            if not path.is_file():
                missing.append(path.name)
                continue
            patient = (row.get("patient_id") or row.get("patientid") or "").strip()
            records.append(CaseRecord(path, label, f"ieee8023:{patient}" if patient else fallback_patient_id(path, root),
                                      source="ieee8023"))
    if missing:
        log.warning("ieee8023: %d image(s) listed in metadata.csv are missing (e.g. %s)", len(missing), missing[0])
    return sorted(records, key=lambda r: r.path)


def sirm_volumes(root) -> list[CaseRecord]:
    """SIRM / Inf-Net COVID-19 CT volumes: one folder of ordered JPG slices per scan, all COVID-19.

    Radiopaedia scans of one case (``...-pneumonia-29_86490_1-dcm`` and
    ``...-pneumonia-29_86491_1-dcm``) share a patient id (``radiopaedia:29``).

    Args:
        root: the folder of scan folders.

    Returns:
        Records labelled ``"covid"``.
    """
    root = _require_dir(root, "SIRM COVID-19 CT volumes")
    records = []
    for folder in _subdirs(root):
        case = re.match(r"radiopaedia_org_.*?-(\d+)_\d+_\d+-dcm$", folder.name)
        patient = f"radiopaedia:{case.group(1)}" if case else folder.name
        records.append(CaseRecord(folder, "covid", patient, source="sirm"))
    return records


def dre_net_demo(root) -> list[CaseRecord]:
    """DRE-Net demo: ``personNNN_COVID19`` / ``personNNN_non-COVID19`` folders of slices.

    Args:
        root: the folder of person folders.

    Returns:
        Records labelled ``"covid"`` / ``"pneumonia"`` (the non-COVID cases are bacterial pneumonia).
    """
    root = _require_dir(root, "DRE-Net demo")
    records = []
    for folder in _subdirs(root):
        match = re.match(r"(person\d+)_(non-)?COVID-?19$", folder.name, flags=re.IGNORECASE)
        if match:
            records.append(CaseRecord(folder, "pneumonia" if match.group(2) else "covid", match.group(1),
                                      source="dre-net"))
    return records


NIH_FRONTAL_VIEWS = ("PA", "AP")


def _nih_entry_file(root: Path) -> Path:
    """Returns: the ``Data_Entry_2017*.csv`` of an NIH ChestX-ray14 copy."""
    found = sorted(root.glob("Data_Entry_2017*.csv"))
    if not found:
        hint = (" (it holds metadata.csv: for the pneumonia subset use nih-pneumonia:PATH)"
                if (root / "metadata.csv").is_file() else "")
        raise ChestDxError(f"{root} holds no Data_Entry_2017.csv{hint}: give the NIH ChestX-ray14 folder that holds "
                           "it and the images*/ folders")
    return found[0]


def nih_chestxray14(root) -> list[CaseRecord]:
    """NIH ChestX-ray14: ``Data_Entry_2017.csv`` and the images in ``images*/`` folders.

    Frontal views (PA, AP) only. "No Finding" -> normal, any finding -> disease (DETL's
    source task). Images are found by file name anywhere under ``root`` (the release
    splits them over ``images_001/images`` ... ``images_012/images``).

    Args:
        root: the folder holding ``Data_Entry_2017.csv``.

    Returns:
        One record per image; patient id ``nih:<Patient ID>``; the finding labels in ``group``.
    """
    root = _require_dir(root, "NIH ChestX-ray14")
    entries = _nih_entry_file(root)
    with open(entries, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    needed = ("Image Index", "Finding Labels", "Patient ID", "View Position")
    if rows and not all(col in rows[0] for col in needed):
        raise ChestDxError(f"{entries} lacks the columns {', '.join(needed)}: is it the NIH Data_Entry_2017.csv?")
    rows = [r for r in rows if r["View Position"].strip().upper() in NIH_FRONTAL_VIEWS]
    wanted = {r["Image Index"].strip() for r in rows}
    files = {p.name: p for p in root.rglob("*") if p.name in wanted and p.is_file()}
    records, missing = [], []
    for row in rows:
        name = row["Image Index"].strip()
        if name not in files:
            missing.append(name)
            continue
        findings = row["Finding Labels"].strip()
        label = "normal" if findings.lower() == "no finding" else "disease"
        records.append(CaseRecord(files[name], label, f"nih:{row['Patient ID'].strip()}", group=findings, source="nih"))
    if missing:
        log.warning("NIH ChestX-ray14: %d frontal image(s) listed in %s are missing (e.g. %s)",
                    len(missing), entries.name, missing[0])
    return sorted(records, key=lambda r: r.path)


NIH_PNEUMONIA_LABELS = {"Pneumonia": "other-pneumonia", "No_findings": "normal"}


def nih_pneumonia(root) -> list[CaseRecord]:
    """NIH ChestX-ray14 pneumonia subset: ``metadata.csv`` (path, label, patient_id) and the class folders.

    ``Pneumonia`` -> other-pneumonia, ``No_findings`` -> normal (labels text-mined from
    reports by NIH: noisy). The same patient can have films in both classes.

    Args:
        root: the folder holding ``metadata.csv``.

    Returns:
        One record per listed image; patient id ``nih:<patient number>``; source ``"nih"``.
    """
    root = _require_dir(root, "NIH pneumonia subset")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ChestDxError(f"{meta} not found: give the folder holding metadata.csv (path,label,patient_id) "
                           "and the Pneumonia/ and No_findings/ folders")
    records = []
    for record in csv_list(meta):
        label = NIH_PNEUMONIA_LABELS.get(record.label)
        if label is None:
            raise ChestDxError(f"{meta}: label {record.label!r} of {record.path.name} is not one of "
                               f"{', '.join(NIH_PNEUMONIA_LABELS)}")
        patient = record.patient_id.lstrip("0") or "0"
        records.append(CaseRecord(record.path, label, f"nih:{patient}", source="nih"))
    return sorted(records, key=lambda r: r.path)



def _class_folder_images(root: Path, labels: dict[str, tuple[str, str | None]],
                         what: str) -> list[tuple[Path, str, str | None]]:
    """``(image, label, group)`` for each image of the class folders named in ``labels`` (folder -> (label, group)).

    A class folder with an ``images/`` sub-folder (the Kaggle releases) is read from there.
    """
    found = [d for d in _subdirs(root) if d.name in labels]
    if not found:
        raise ChestDxError(f"{root} has none of the class folders {', '.join(labels)}: give the root folder of "
                           f"the {what} dataset")
    for extra in sorted({d.name for d in _subdirs(root)} - set(labels)):
        log.warning("%s: skipped folder %s (classes are %s)", what, extra, ", ".join(labels))
    out = []
    for class_dir in found:
        label, group = labels[class_dir.name]
        folder = class_dir / "images" if (class_dir / "images").is_dir() else class_dir
        out.extend((p, label, group) for p in sorted(folder.iterdir(), key=_by_name)
                   if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    return out


SOARES_LABELS = {"COVID": ("covid-19", None), "non-COVID": ("other-disease", "non-COVID")}
SOARES_SLICES_PER_GROUP = 20


def soares_ct(root) -> list[CaseRecord]:
    """SARS-CoV-2 CT-scan dataset (Soares et al. 2020): ``COVID/`` and ``non-COVID/`` slices of one hospital.

    ``non-COVID`` holds other lung findings or normal lungs; it is labelled ``other-disease``
    (group ``"non-COVID"``) and fits a COVID-19 vs rest task, not a normal class.

    The release has no patient ids. The file order follows the scans (neighbouring files
    are neighbouring slices: median 16x16-thumbnail correlation 0.93 against 0.57 for random
    pairs), so each class folder is grouped by ``ordered_lookalike_groups``: cut into runs
    of about 20 slices at the least similar neighbours, runs holding near-copies
    (correlation >= 0.97) joined. That gives about 50 groups per class (the release
    describes about 60 patients per class). The id is ``soares-group:<folder>/<k>``: a
    look-alike group, not a patient; a group split still cannot rule out one patient in two
    groups.

    Args:
        root: the dataset folder.

    Returns:
        Records labelled ``"covid-19"`` / ``"other-disease"``; source ``"soares"``.
    """
    root = _require_dir(root, "SARS-CoV-2 CT-scan (Soares)")
    images = _class_folder_images(root, SOARES_LABELS, "SARS-CoV-2 CT-scan (Soares)")
    records = []
    for folder in sorted({p.parent for p, _, _ in images}):
        in_folder = [item for item in images if item[0].parent == folder]
        groups = ordered_lookalike_groups([p for p, _, _ in in_folder], SOARES_SLICES_PER_GROUP)
        name = folder.relative_to(root).as_posix()
        records.extend(CaseRecord(p, label, f"soares-group:{name}/{g:02d}", group=group, source="soares")
                       for (p, label, group), g in zip(in_folder, groups))
    return records


MOSMED_SLICE_LABELS = {"CT-0": ("normal", "CT-0"), "CT-1": ("covid-19", "CT-1"), "CT-2plus": ("covid-19", "CT-2plus")}


def mosmed_slices(root) -> list[CaseRecord]:
    """MosMedData slices: ``CT-0/`` (normal), ``CT-1/`` and ``CT-2plus/`` (COVID-19, severity in ``group``).

    The study ids are unknown and the file order carries none (neighbouring files are no
    more alike than random pairs), so each slice gets the fallback id (its own group).
    CT-0 holds one slice per study; CT-1 / CT-2plus may hold several slices of one study.

    Args:
        root: the dataset folder.

    Returns:
        Records labelled ``"normal"`` / ``"covid-19"``; source ``"mosmed"``.
    """
    root = _require_dir(root, "MosMedData slices")
    return [CaseRecord(p, label, fallback_patient_id(p, root), group=group, source="mosmed")
            for p, label, group in _class_folder_images(root, MOSMED_SLICE_LABELS, "MosMedData slices")]


COVID19_RADIOGRAPHY_LABELS = {"COVID": ("covid-19", None), "Normal": ("normal", None),
                              "Viral Pneumonia": ("other-pneumonia", "viral"),
                              "Lung_Opacity": ("other-disease", "lung opacity")}


def covid19_radiography(root) -> list[CaseRecord]:
    """COVID-19 Radiography Database: class folders ``COVID/``, ``Normal/`` (full release: also two more).

    The full release's ``Viral Pneumonia/`` and ``Lung_Opacity/`` are read too.

    No patient ids: fallback id per film. The COVID-19 films come from several public
    collections and the normals from RSNA (source differs by class); some COVID-19 films
    are ieee8023 films again (see ``chestdx.io.lookalike.drop_cross_set_duplicates``).

    Args:
        root: the dataset folder.

    Returns:
        Records labelled ``"covid-19"`` / ``"normal"`` (``"other-pneumonia"``, ``"other-disease"``);
        source ``"covid19-radiography"``.
    """
    root = _require_dir(root, "COVID-19 Radiography Database")
    return [CaseRecord(p, label, fallback_patient_id(p, root), group=group, source="covid19-radiography")
            for p, label, group in _class_folder_images(root, COVID19_RADIOGRAPHY_LABELS,
                                                        "COVID-19 Radiography Database")]


KERMANY_LABELS = {"Normal": ("normal", None), "BacterialPneumonia": ("other-pneumonia", "bacterial"),
                  "ViralPneumonia": ("other-pneumonia", "viral")}


def kermany_pediatric(root) -> list[CaseRecord]:
    """Kermany paediatric chest X-rays: ``Normal/``, ``BacterialPneumonia/``, ``ViralPneumonia/`` (children 1-5 years).

    Both pneumonia folders -> other-pneumonia, the sub-type in ``group``. No patient ids:
    fallback id per film. Children only: keep it a separate domain (report it apart).

    Args:
        root: the dataset folder.

    Returns:
        Records labelled ``"normal"`` / ``"other-pneumonia"``; source ``"kermany"``.
    """
    root = _require_dir(root, "Kermany paediatric X-ray")
    return [CaseRecord(p, label, fallback_patient_id(p, root), group=group, source="kermany")
            for p, label, group in _class_folder_images(root, KERMANY_LABELS, "Kermany paediatric X-ray")]


def csv_list(path) -> list[CaseRecord]:
    """A CSV file listing studies: columns ``path``, ``label``, ``patient_id`` (optional ``split``, ``source``).

    Paths are relative to the CSV's folder (absolute paths are kept). An empty patient
    id gets the fallback id (each study its own patient).

    Args:
        path: the CSV file.

    Returns:
        One record per row, in file order.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ChestDxError(f"{path} is not a file: give a CSV with the columns path,label,patient_id")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not {"path", "label"} <= set(columns):
            raise ChestDxError(f"{path} has columns {columns}: it needs path,label,patient_id "
                               "(patient_id may be empty)")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    records, missing = [], []
    for line, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise ChestDxError(f"{path} line {line}: empty path or label; every row needs both")
        study = Path(row["path"]).expanduser()
        study = study if study.is_absolute() else path.parent / study
        if not study.exists():
            missing.append(row["path"])
            continue
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise ChestDxError(f"{path} line {line}: split {split!r} should be one of {', '.join(SPLITS)} or empty")
        patient = row.get("patient_id") or "img:" + Path(row["path"]).with_suffix("").as_posix()
        records.append(CaseRecord(study, row["label"], patient, split=split, source=row.get("source") or None))
    if missing:
        raise ChestDxError(f"{len(missing)} path(s) in {path} do not exist (e.g. {missing[0]}): paths are relative "
                           "to the CSV's folder; fix them or remove those rows")
    return records


ADAPTERS: dict[str, Callable[[Path], list[CaseRecord]]] = {
    "folder": folder_per_class,
    "ucsd": ucsd_covid_ct,
    "cc-ccii": cc_ccii,
    "mosmed": mosmeddata,
    "covid-ct-md": covid_ct_md,
    "ieee8023": ieee8023_xray,
    "sirm": sirm_volumes,
    "dre-net-demo": dre_net_demo,
    "nih": nih_chestxray14,
    "nih-pneumonia": nih_pneumonia,
    "soares": soares_ct,
    "mosmed-slices": mosmed_slices,
    "covid19-radiography": covid19_radiography,
    "kermany": kermany_pediatric,
    "csv": csv_list,
}


def load_dataset(spec: str) -> list[CaseRecord]:
    """List a dataset from a ``"NAME:PATH"`` spec, e.g. ``"cc-ccii:/data/CC-CCII"``.

    Args:
        spec: adapter name (see ``ADAPTERS``), a colon, the dataset root.

    Returns:
        The records (never empty).
    """
    name, sep, path = spec.partition(":")
    if not sep or not path:
        raise ChestDxError(f"dataset {spec!r} should be NAME:PATH with NAME one of {', '.join(ADAPTERS)}")
    if name not in ADAPTERS:
        raise ChestDxError(f"unknown dataset type {name!r}: use one of {', '.join(ADAPTERS)}")
    root = Path(path).expanduser()
    if not root.exists():
        raise ChestDxError(f"{root} does not exist: check the dataset path in {spec!r}")
    records = ADAPTERS[name](root)
    if not records:
        raise ChestDxError(f"no studies found in {root} with the {name!r} layout: check the path and the dataset type")
    return records
