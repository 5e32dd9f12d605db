"""Honest evaluation: patient-level metrics with bootstrap CIs, calibration, reports, reader studies.

Modules: ``metrics`` (binary / multi-class metrics, threshold sweep, operating point),
``bootstrap`` (patient bootstrap), ``calibration`` (ECE, Brier, reliability curve,
temperature scaling), ``report`` (``evaluate_predictions``, ``write_html_report``) and
``reader_study`` (radiologists unaided vs AI-aided).
"""
