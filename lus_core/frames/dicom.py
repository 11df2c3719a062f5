"""DICOM ultrasound cine loops: a multi-frame file, or a folder of single-frame files (one series).

What leaves this module is pixels and a few header facts that identify no one: the frame rate,
the sector from the ultrasound regions, the burned-in annotation flag and the device's make and
model. A header's identifying strings (names, ids, dates, UIDs: `identifying_values`) are only
ever compared with file names, so that a file named after its patient or UID gets a neutral name
in every output (lus_core.frames.identity).

Pixels: pydicom, with its own RLE decoder and the pylibjpeg plugins for JPEG baseline / lossless
and JPEG 2000. YBR_FULL / YBR_FULL_422 become RGB (pydicom's conversion), MONOCHROME1 is
inverted, a palette is applied, and more than 8 stored bits are scaled to 8. Frames come one at a
time (`pydicom.pixels.iter_pixels`): a long cine is never decoded into memory at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DICOM_EXTENSIONS = {".dcm", ".dicom"}
# header elements whose values identify a patient, a visit, a place or a person (PS3.15 Annex E's
# basic profile, the ones an ultrasound archive fills); every UID is added by its value type
IDENTIFYING_KEYWORDS = (
    "PatientID", "PatientName", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "MedicalRecordLocator", "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "StationName",
    "DeviceSerialNumber", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "AcquisitionDateTime", "StudyTime", "SeriesTime",
)
PERSON_NAMES = {"PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
                "NameOfPhysiciansReadingStudy"}
STANDARD_UID_ROOT = "1.2.840.10008."  # transfer syntaxes and SOP classes: the standard's own, no one's


class DicomError(ValueError):
    """A DICOM file or series cannot be used; the message names the file and the problem."""


def is_dicom_file(path: Path) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS and path.is_file()


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_dicom_file(p))


def is_dicom_series(path: Path) -> bool:
    """A folder of DICOM files that are single frames: one video (a folder of multi-frame files
    holds several videos, each file one)."""
    if not path.is_dir():
        return False
    files = dicom_files(path)
    if not files:
        return False
    try:
        return n_frames(read_header(files[0])) == 1
    except DicomError:
        return True  # a broken first file: the series reports it when it is read


def is_dicom(path: Path) -> bool:
    return is_dicom_file(path) or is_dicom_series(path)


def read_header(path: Path):
    """The header (no pixel data) of one file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError) as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def n_frames(header) -> int:
    try:
        return max(1, int(header.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def frame_rate(header) -> float:
    """Frames per second from FrameTime (ms between frames), CineRate or RecommendedDisplayFrameRate;
    0.0 when the header gives none."""
    for keyword, to_fps in (("FrameTime", lambda v: 1000.0 / v), ("CineRate", float),
                            ("RecommendedDisplayFrameRate", float)):
        try:
            value = float(header.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return float(to_fps(value))
    return 0.0


def region_box(header) -> tuple[int, int, int, int] | None:
    """The image's ultrasound sector (x0, y0, x1, y1), x1 / y1 exclusive, from its
    SequenceOfUltrasoundRegions: the largest 2D region (RegionSpatialFormat 1), tissue regions
    (RegionDataType 1) before others (a colour-flow box lies inside its tissue region); None when
    the header has no usable 2D region."""
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    found = []
    for region in header.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            if int(region.get("RegionSpatialFormat", 0)) != 1:
                continue
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1) + 1, int(region.RegionLocationMaxY1) + 1
        except (AttributeError, TypeError, ValueError):
            continue  # an incomplete region: not a crop
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = (min(cols, x1) if cols else x1), (min(rows, y1) if rows else y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        tissue = int(region.get("RegionDataType", 0) or 0) == 1
        found.append((tissue, (x1 - x0) * (y1 - y0), (x0, y0, x1, y1)))
    return max(found)[2] if found else None


def device(header) -> str:
    """The scanner's make and model (not identifying: a product, not a place), '' when unknown."""
    parts = [str(header.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")]
    return " ".join(p for p in parts if p)


def burned_in_annotation(header) -> str:
    """BurnedInAnnotation: 'YES' (text such as names may be in the pixels), 'NO', or '' (not stated)."""
    return str(header.get("BurnedInAnnotation", "") or "").strip().upper()


def identifying_values(header) -> set[str]:
    """The header's identifying strings, lower-cased: the values of IDENTIFYING_KEYWORDS (a
    person's name also by its components) and of every UID but the standard's own, at any depth."""
    from pydicom.multival import MultiValue

    values: set[str] = set()

    def add(value, person: bool = False) -> None:
        for item in (value if isinstance(value, list | tuple | MultiValue) else [value]):
            text = str(item).strip().lower()
            if text:
                values.add(text)
                if person:  # family^given^middle: each name on its own
                    values.update(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 2)

    for keyword in IDENTIFYING_KEYWORDS:
        if keyword in header:
            add(header.get(keyword), person=keyword in PERSON_NAMES)

    def walk(ds) -> None:
        for element in ds:
            if element.VR == "SQ":
                for item in element.value or []:
                    walk(item)
            elif element.VR == "UI" and element.value:
                uids = element.value if element.VM > 1 else [element.value]
                add([u for u in uids if not str(u).startswith(STANDARD_UID_ROOT)])

    walk(header)
    return values


def name_leaks(name: str, values: set[str]) -> bool:
    """Whether a file or folder name carries one of `values`: as a whole token (between
    non-alphanumerics), or anywhere when the value has 4 characters or more."""
    low = name.lower()
    tokens = set(re.split(r"[^0-9a-z]+", low))
    return any(v in tokens or (len(v) >= 4 and v in low) for v in values)


@dataclass
class DicomHeaderFacts:
    """What the workflow takes from a video's header, read once at discovery."""

    patient_id: str  # raw PatientID: pseudonymised before it is written anywhere
    identifying: set[str]
    n_frames: int


def header_facts(path: Path) -> DicomHeaderFacts:
    """The facts of a multi-frame file, or of a series folder's first file (every file of a
    series is one patient's)."""
    first = dicom_files(path)[0] if path.is_dir() else path
    header = read_header(first)
    return DicomHeaderFacts(str(header.get("PatientID", "") or "").strip(), identifying_values(header),
                            n_frames(header) if path.is_file() else len(dicom_files(path)))


class DicomVideo:
    """The frames of a multi-frame file or of a single-frame series, in order, one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = _series_in_order(self.path)
            self.header = read_header(self.files[0])
            self.n_frames = len(self.files)
        else:
            self.files = [self.path]
            self.header = read_header(self.path)
            self.n_frames = n_frames(self.header)
        self.fps = frame_rate(self.header)
        self.region_box = region_box(self.header)
        self.burned_in = burned_in_annotation(self.header)
        self.device = device(self.header)

    def frames(self) -> Iterator[np.ndarray]:
        """Each frame as uint8: (H, W) grey, or (H, W, 3) in OpenCV's BGR order."""
        for file in self.files:
            header = self.header if file == self.files[0] else read_header(file)
            try:
                for array in _file_frames(file, header):
                    yield to_uint8(array, header, file)
            except DicomError:
                raise
            except Exception as exc:  # pydicom and its plugins raise many kinds for bad pixel data
                raise DicomError(f"{file}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc


def _file_frames(file: Path, header) -> Iterator[np.ndarray]:
    """A file's frames, decoded one at a time. Uncompressed data is read frame by frame by index:
    pydicom 3.0.2's iterator miscounts the frame length of native YBR_FULL_422 after the first frame."""
    from pydicom.pixels import iter_pixels, pixel_array

    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_encapsulated:
        for i in range(n_frames(header)):
            yield pixel_array(file, index=i)
    else:
        yield from iter_pixels(file)


def to_uint8(array: np.ndarray, header, file: Path) -> np.ndarray:
    """One decoded frame (pydicom: RGB after its YBR conversion, or grey) as uint8 grey (H, W) or BGR (H, W, 3)."""
    import cv2

    photometric = str(header.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, header)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise DicomError(f"{file}: unsupported frame shape {array.shape} (photometric {photometric or 'unknown'})")
    if array.dtype != np.uint8:
        array = _to_8_bits(array, header, photometric)
    if photometric == "MONOCHROME1":  # 0 is white: invert to the grey scale every other frame uses
        array = 255 - array
    return cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else np.ascontiguousarray(array)


def _to_8_bits(array: np.ndarray, header, photometric: str) -> np.ndarray:
    """More than 8 bits to 8: the stored range scaled down (its top 8 bits)."""
    bits = 16 if photometric == "PALETTE COLOR" else int(header.get("BitsStored", 8) or 8)
    values = array.astype(np.int64)
    if int(header.get("PixelRepresentation", 0) or 0) == 1:  # signed: shift to 0..2^bits - 1
        values = values + (1 << (bits - 1))
    return np.clip(values >> max(0, bits - 8), 0, 255).astype(np.uint8)


def _series_in_order(folder: Path) -> list[Path]:
    """A series folder's files by InstanceNumber (then name); all single frames of one series."""
    files = dicom_files(folder)
    if not files:
        raise DicomError(f"{folder}: no DICOM file in this folder")
    keyed, series = [], set()
    for file in files:
        header = read_header(file)
        if n_frames(header) != 1:
            raise DicomError(f"{file}: a multi-frame file inside a series folder; put multi-frame files "
                             "directly in a video folder (each file is one video)")
        series.add(str(header.get("SeriesInstanceUID", "")))
        try:
            number = int(header.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            number = 0
        keyed.append((number, file.name, file))
    if len(series) > 1:  # never print the UIDs themselves
        raise DicomError(f"{folder}: its files belong to {len(series)} different series; one folder must hold one series")
    return [file for _, _, file in sorted(keyed)]

