"""DICOM outputs of a diagnosis: SR (TID 1500), key-slice secondary captures, lung segmentation; read back and validated."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.models.loading import load_model
from chestdx.pipeline import diagnose

hd = pytest.importorskip("highdicom")
from chestdx.outputs.dicom import CAPTION, MaskSegment, dicom_results, write_dicom_outputs  # noqa: E402


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "ct"
    write_sample_series(out, n_slices=24, size=128, seed=1, progress=False)
    return out


@pytest.fixture(scope="module")
def diagnosis(series):
    study = load_study(series, keep_phi=True, progress=False)
    return diagnose(study, load_model(kind=study.kind))


@pytest.fixture(scope="module")
def written(diagnosis, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom-out")
    return write_dicom_outputs(out, diagnosis, n_key_slices=3)


def _by_name(paths, prefix):
    return [p for p in paths if p.name.startswith(prefix)]


def _content_items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def test_report_holds_probabilities_decision_threshold_model_and_key_slices(diagnosis, written):
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(_by_name(written, "sr")[0]))
    refs = diagnosis.study.dicom
    assert sr.StudyInstanceUID == refs.study_uid and sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    items = list(_content_items(sr))
    numbers = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
               for i in items if i.ValueType == "NUM"}
    for name, p in zip(diagnosis.model.config.classes, diagnosis.probabilities):
        assert numbers[f"Probability of {name}"] == pytest.approx(float(p), abs=1e-6)
    assert numbers["Operating threshold on the last class probability"] == pytest.approx(diagnosis.model.threshold)
    decisions = [i.ConceptCodeSequence[0].CodeMeaning for i in items
                 if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Decision"]
    assert decisions == [diagnosis.decision]
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in items if i.ValueType == "TEXT"}
    assert texts["Algorithm Name"] == diagnosis.model.name and texts["Algorithm Version"]
    referenced = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"]
    key = [refs.sop_instance_uids[i] for i, _ in diagnosis.top_slices(3)]
    assert referenced == key
    evidence = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for r in series.ReferencedSOPSequence}
    assert evidence == set(key)


def test_outputs_are_deidentified_by_default(written):
    for path in written:
        ds = pydicom.dcmread(path)
        assert not ds.get("PatientName") and not ds.get("PatientID") and not ds.get("PatientBirthDate")


def test_keep_patient_copies_the_patient_module_and_needs_it_read(diagnosis, series):
    results = dicom_results(diagnosis, keep_patient=True)
    assert {ds.PatientID for ds in results.datasets()} == {"CHESTDX-SYNTHETIC"}
    assert {ds.StudyInstanceUID for ds in results.datasets()} == {diagnosis.study.dicom.study_uid}
    deidentified = dataclasses.replace(diagnosis, study=load_study(series, progress=False))
    with pytest.raises(ChestDxError, match="keep_phi=True"):
        dicom_results(deidentified, keep_patient=True)


def test_captures_show_caption_over_key_slices_and_reference_them(diagnosis, written):
    refs = diagnosis.study.dicom
    captures = [pydicom.dcmread(p) for p in _by_name(written, "sc_")]
    rows = diagnosis.ranked_rows[:3]
    assert len(captures) == 3
    for sc, row in zip(captures, rows):
        index = int(diagnosis.prepared.indices[row])
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == refs.sop_instance_uids[index]
        pixels = sc.pixel_array
        rendered = diagnosis.prepared.rendered[row]
        strip = pixels.shape[0] - rendered.shape[0]
        assert strip > 0 and pixels.shape[1] == rendered.shape[1]
        np.testing.assert_array_equal(pixels[strip:, :, 0], rendered)  # no explanation: the slice itself
        caption = pixels[:strip].astype(int)
        assert np.any((caption[..., 0] > 150) & (caption[..., 1] > 150) & (caption[..., 2] < 60))  # yellow text
        assert CAPTION in sc.ImageComments


def test_segmentation_holds_the_lung_mask(diagnosis, written):
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(_by_name(written, "seg")[0]))
    refs, mask = diagnosis.study.dicom, diagnosis.prepared.lung_mask
    assert seg.StudyInstanceUID == refs.study_uid and mask.any()
    assert seg.SegmentSequence[0].SegmentLabel == "lung"
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(refs.sop_instance_uids),
                                               segment_numbers=[1], assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), mask)


def test_lesion_masks_are_added_as_more_segments(diagnosis):
    lesion = np.zeros_like(diagnosis.prepared.lung_mask)
    lesion[10, 40:60, 40:60] = True
    code = hd.sr.CodedConcept("3219003", "SCT", "Ground glass opacity")
    seg = dicom_results(diagnosis, extra_segments=[
        MaskSegment("ground-glass opacity", lesion, hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"), code)]).segmentation
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lung", "ground-glass opacity"]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(diagnosis.study.dicom.sop_instance_uids),
                                               segment_numbers=[2], assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), lesion)


def _seg_pixels(path, refs, segments):
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(path))
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(refs.sop_instance_uids),
                                               segment_numbers=segments, assert_missing_frames_are_empty=True)
    return seg, pixels.astype(bool)


def test_segmentation_holds_the_lesions_of_the_slices_the_classifier_used(diagnosis, written):
    from chestdx.models.lesion import load_lesion_model, segment_study

    refs, lungs = diagnosis.study.dicom, diagnosis.prepared.lung_mask
    seg, pixels = _seg_pixels(_by_name(written, "seg")[0], refs, [2, 3])
    items = seg.SegmentSequence
    assert [s.SegmentLabel for s in items] == ["lung", "ground-glass opacity", "consolidation"]
    assert [(c.CodingSchemeDesignator, c.CodeValue) for s in items[1:] for c in s.SegmentedPropertyTypeCodeSequence] \
        == [("DCM", "112120"), ("SCT", "95436008")]
    assert [s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName for s in items] == \
        [diagnosis.model.name, "lesion-default", "lesion-default"]
    used = np.unique(diagnosis.prepared.indices[diagnosis.prepared.indices >= 0])
    examined = [i for i in used if lungs[i].any()]
    assert items[1].SegmentDescription == f"lesion-default: {len(examined)} of 24 slices, those the classifier used"
    assert pixels[..., 0].any()  # the phantom has ground-glass patches
    assert not pixels[np.setdiff1d(np.arange(24), used)].any()  # slices not examined hold nothing
    only_used = np.zeros_like(lungs)
    only_used[used] = lungs[used]
    labels = segment_study(diagnosis.study, load_lesion_model(), lung_mask=only_used).labels
    np.testing.assert_array_equal(pixels[..., 0], labels == 1)
    np.testing.assert_array_equal(pixels[..., 1], labels == 2)


def test_quantified_lesions_are_reused_on_the_slices_segmented(diagnosis, tmp_path, monkeypatch):
    import chestdx.models.lesion as lesion
    from chestdx.pipeline import quantify_lesions

    quantified = dataclasses.replace(diagnosis, timing=dict(diagnosis.timing), warnings=list(diagnosis.warnings))
    quantify_lesions(quantified, max_slices=6)
    result = quantified.lesions
    monkeypatch.setattr(lesion, "segment_study", lambda *a, **k: pytest.fail("the lesions were segmented twice"))
    paths = write_dicom_outputs(tmp_path, quantified)
    seg, pixels = _seg_pixels(_by_name(paths, "seg")[0], diagnosis.study.dicom, [2, 3])
    assert seg.SegmentSequence[1].SegmentDescription == "lesion-default: 6 of 24 slices, as quantified"
    filled_in = np.setdiff1d(np.flatnonzero(result.labels.any(axis=(1, 2))), result.segmented)
    assert len(filled_in) and not pixels[filled_in].any()  # labels copied from a neighbour are not shown as found
    np.testing.assert_array_equal(pixels[result.segmented, ..., 0], result.labels[result.segmented] == 1)
    assert pixels[result.segmented].any()


def test_without_the_lesion_model_the_segmentation_holds_the_lungs(diagnosis, tmp_path, monkeypatch):
    import chestdx.outputs.dicom as dicom

    assert dicom.lesion_model_or_none("no-such-model") is None
    monkeypatch.setattr(dicom, "lesion_model_or_none", lambda name=None: None)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(_by_name(write_dicom_outputs(tmp_path, diagnosis), "seg")[0]))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lung"]


def test_explained_captures_carry_the_heat_map(diagnosis):
    from chestdx.pipeline import explain

    explained = dataclasses.replace(diagnosis)
    explanation = explain(explained, "cam", n_slices=2)
    captures = dicom_results(explained).captures
    refs = diagnosis.study.dicom
    assert [sc.SourceImageSequence[0].ReferencedSOPInstanceUID for sc in captures] == \
        [refs.sop_instance_uids[i] for i in explanation.slice_indices]
    image = captures[0].pixel_array[-explanation.rendered.shape[1]:].astype(int)
    assert np.abs(image[..., 0] - image[..., 2]).max() > 50  # coloured, not the grey slice


def test_study_not_from_dicom_is_refused(diagnosis, tmp_path):
    plain = dataclasses.replace(diagnosis, study=dataclasses.replace(diagnosis.study, dicom=None))
    with pytest.raises(ChestDxError, match="DICOM"):
        write_dicom_outputs(tmp_path, plain)


def test_existing_outputs_are_not_overwritten(diagnosis, written):
    with pytest.raises(ChestDxError, match="already exists"):
        write_dicom_outputs(written[0].parent, diagnosis)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_finds_no_error(written):
    for path in written:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


def test_predict_dicom_out(series, tmp_path, capsys):
    assert main(["--quiet", "predict", str(series), "--dicom-out", str(tmp_path / "out"), "--json"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names[-2:] == ["seg.dcm", "sr.dcm"] and sum(n.startswith("sc_slice_") for n in names) == 3
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lung", "ground-glass opacity", "consolidation"]
    assert '"dicom_outputs"' in capsys.readouterr().out


def test_real_dicom_study_gives_valid_outputs(shared_data, tmp_path):
    study = load_study(shared_data / "dicom-ct-two-slices", progress=False)
    diagnosis = diagnose(study, load_model(kind=study.kind))
    paths = write_dicom_outputs(tmp_path, diagnosis, n_key_slices=1)
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
               for p in (shared_data / "dicom-ct-two-slices").glob("*.dcm")}
    assert set(study.dicom.sop_instance_uids) == sources
    assert "seg.dcm" not in [p.name for p in paths]  # the anonymised files have no FrameOfReferenceUID
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study.dicom.study_uid and not ds.get("PatientName")
    if shutil.which("dciodvfy"):
        for path in paths:
            out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")] == []
