"""The public clinical data sets the project ships, unchanged, with their licences (see README.md here).

Found through importlib.resources, so the probes' defaults work from a checkout and after ``pip install`` alike.
Cite the papers in README.md wherever results on these sets are reported.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

MEDEC_MS_VALIDATION = "medec/medec-ms-validation.csv"
MEDSAFETYBENCH = "medsafetybench"
PUBMEDQA_L = "pubmedqa/pqal-dev.json"
HALVES = ("tuning", "held-out")


def path(name: str) -> Path:
    """The file or folder ``name`` (one of the constants above) on the file system.

    The package is installed as plain files (a wheel, an editable install or a checkout), so a resource is a path;
    a zipped install has no such path, and says so rather than handing out a path that does not exist.
    """
    resource = files(__name__).joinpath(name)
    found = Path(str(resource))
    if not found.exists():
        raise FileNotFoundError(f"the packaged data set {name!r} is not on the file system (a zipped install?)")
    return found


def half(text_id: str) -> str:
    """Which half of a data set a record belongs to: "tuning" (methods may be tuned on it) or "held-out" (only ever
    reported on). Fixed by a hash of the record's id, so it never depends on the order or the size of a file; made
    before any method was tuned on MEDEC (docs/judges.md, "Validation").
    """
    return HALVES[hashlib.sha256(text_id.encode()).digest()[0] & 1]
