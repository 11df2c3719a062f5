"""Patient ids and file names of DICOM input, made safe to write.

A DICOM's patient (its PatientID, or a labels column, or the file-name regex) is written
everywhere as a pseudonym: ``p`` + the first 16 hex digits of HMAC-SHA256(salt, raw id), unless
``dataset.raw_patient_ids`` is true. Once a dataset holds a DICOM file, every patient of the run
is pseudonymised the same way, so that one person's DICOM and video files stay one patient.

The salt is a secret of the results folder: ``R/.patient_salt`` (64 random hex digits, written
once with mode 0600, read on every later run, so the same run gives the same pseudonyms), or the
file ``dataset.patient_salt_file`` names (one salt shared by several results folders, whose
pseudonyms then agree). Only the file's path is in the config; no report, log or result holds the
salt. Without the salt a pseudonym cannot be traced back, even for guessable ids (record numbers).

A DICOM file or folder whose name carries one of its header's identifying values (a file named
after its SOPInstanceUID, a folder after the patient) is given a neutral name, ``dicom-`` + 12 hex
digits of the same keyed hash, in video ids and recorded paths (lus_core.frames.dicom.name_leaks).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path, PurePosixPath

from lus_core.frames.dicom import DICOM_EXTENSIONS

SALT_FILE = ".patient_salt"
MIN_SALT = 16  # characters: a shorter salt is guessable


class IdentityError(ValueError):
    """The salt cannot be had; the message names the file."""


def results_salt(results: str | Path, salt_file: str = "") -> bytes:
    """The salt of a run: ``salt_file`` when given (it must exist), else ``results/.patient_salt``,
    created on first use."""
    if salt_file:
        path = Path(salt_file)
        if not path.is_file():
            raise IdentityError(f"{path}: salt file not found (dataset.patient_salt_file)")
    else:
        path = Path(results) / SALT_FILE
        if not path.exists():
            _create_salt(path)
    salt = path.read_bytes().strip()
    if len(salt) < MIN_SALT:
        raise IdentityError(f"{path}: the salt must hold at least {MIN_SALT} characters (it holds {len(salt)})")
    return salt


def _create_salt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def keyed_hash(value: str, salt: bytes) -> str:
    return hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(raw_id: str, salt: bytes) -> str:
    """The written form of a patient id: ``p`` + 16 hex digits (64 bits: no collision among the
    patients of any cohort, and checked)."""
    return "p" + keyed_hash(raw_id, salt)[:16]


def pseudonymise(raw_ids: list[str], salt: bytes) -> dict[str, str]:
    """raw id -> pseudonym for every id; two ids with one pseudonym is an error (never silently one patient)."""
    out = {raw: pseudonym(raw, salt) for raw in sorted(set(raw_ids))}
    if len(set(out.values())) != len(out):  # pragma: no cover - 64 bits
        raise IdentityError("two patient ids share a pseudonym; use another salt (dataset.patient_salt_file)")
    return out


def neutral_name(name: str, salt: bytes) -> str:
    """The neutral replacement of a file or folder name that carries an identifying value; a
    file keeps its extension."""
    suffix = PurePosixPath(name).suffix.lower()
    return "dicom-" + keyed_hash(name, salt)[:12] + (suffix if suffix in DICOM_EXTENSIONS else "")
