"""A PACS node: receives CT series over DICOM, diagnoses each complete series, sends DICOM results back (front end)."""
