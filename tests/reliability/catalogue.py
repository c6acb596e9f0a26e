"""The whole bad-input catalogue: the first cases (``cases.py``) and the red-team pass of issue 19
(``cases_labels.py``: plan and shard files; ``cases_calib.py``: bias tables; ``cases_student.py``:
checkpoints, run folders, outputs). ``test_catalogue.py`` runs it; docs/reliability.md lists it."""

from __future__ import annotations

from tests.reliability.cases import CASES as FIRST_CASES
from tests.reliability.cases import FAMILIES, Case
from tests.reliability.cases_calib import CALIB_REDTEAM_CASES
from tests.reliability.cases_labels import LABELS_REDTEAM_CASES
from tests.reliability.cases_student import STUDENT_REDTEAM_CASES

CASES: list[Case] = FIRST_CASES + LABELS_REDTEAM_CASES + CALIB_REDTEAM_CASES + STUDENT_REDTEAM_CASES

__all__ = ["CASES", "FAMILIES", "Case"]
