"""The one diagnosis pipeline every front end calls: ``diagnose`` a study once, ``explain`` from the same pass."""

from chestdx.pipeline.diagnosis import (Diagnosis, StudyExplanation, diagnose, diagnose_source, explain,
                                        quantify_lesions)

__all__ = ["Diagnosis", "StudyExplanation", "diagnose", "diagnose_source", "explain", "quantify_lesions"]
