"""DICOM ultrasound files for tests, written with pydicom: multi-frame or single-frame series, any
photometric interpretation the reader supports, compressed or not, with ultrasound regions and
identifying tags (every one holding a marker that a leak test can search for)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

# every identifying tag of the written files holds one of these (none occurs by chance in a file)
MARKERS = {
    "PatientName": "Zqxname^Markerpat",
    "PatientBirthDate": "19070304",
    "AccessionNumber": "ACCZQX77123",
    "InstitutionName": "Zqx Marker Hospital",
    "ReferringPhysicianName": "Zqxdoctor^Markerref",
    "OperatorsName": "Zqxoperator",
    "StationName": "ZQXSTATION9",
    "DeviceSerialNumber": "SNZQX4471",
    "StudyID": "STZQX5521",
}
UID_ROOT = "1.2.826.0.1.3680043.10.999."  # a private test root: the markers of the UIDs


def uid(*parts: int) -> str:
    return UID_ROOT + ".".join(str(p) for p in parts)


def colour_fan(n=8, h=96, w=128, seed=0) -> np.ndarray:
    """RGB uint8 (n, h, w, 3): a grey fan with a coloured (Doppler-like) box inside it."""
    from tests.video_helpers import fan_frames

    grey = fan_frames(n, h, w, seed)
    rgb = np.repeat(grey[..., None], 3, axis=3).copy()
    rgb[:, 40:60, 50:80, 0] = 200
    rgb[:, 40:60, 50:80, 2] = 40
    return rgb


def _base(sop_class, patient_id: str, instance: int, series: int, study: int, burned_in: str | None,
          identity: bool) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(study, series, instance)
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(study, series)
    ds.FrameOfReferenceUID = uid(study, series, 0, 1)
    ds.Modality = "US"
    ds.PatientID = patient_id
    ds.InstanceNumber = instance
    ds.Manufacturer = "TestVendor"
    ds.ManufacturerModelName = "Probe 3000"
    if identity:
        for keyword, value in MARKERS.items():
            setattr(ds, keyword, value)
        ds.OtherPatientIDs = patient_id + "OTHER"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    return ds


def _pixels(ds: Dataset, frames: np.ndarray, photometric: str) -> None:
    n, h, w = frames.shape[:3]
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if photometric.startswith("MONOCHROME"):
        ds.SamplesPerPixel = 1
        data = frames if photometric == "MONOCHROME2" else 255 - frames
    else:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        data = frames if photometric == "RGB" else convert_color_space(frames, "RGB", "YBR_FULL")
        if photometric == "YBR_FULL_422":  # two pixels' Y, then their mean Cb and Cr
            y = data[..., 0].reshape(n, h, w // 2, 2)
            cb = data[..., 1].reshape(n, h, w // 2, 2).mean(axis=3).round().astype(np.uint8)
            cr = data[..., 2].reshape(n, h, w // 2, 2).mean(axis=3).round().astype(np.uint8)
            data = np.concatenate([y, cb[..., None], cr[..., None]], axis=3)
    ds.PhotometricInterpretation = photometric
    ds.PixelData = np.ascontiguousarray(data, np.uint8).tobytes()


def write_dicom(path: Path, frames: np.ndarray, *, photometric: str = "MONOCHROME2", syntax=None,
                patient_id: str = "MRNZQX00001", frame_time_ms: float | None = 100.0, cine_rate: int | None = None,
                display_rate: int | None = None, regions: list[dict] | None = None, burned_in: str | None = "NO",
                identity: bool = True, study: int = 1, series: int = 1, instance: int = 1) -> Path:
    """A multi-frame ultrasound file of `frames` (uint8 (N, H, W) grey or (N, H, W, 3) RGB) in
    `photometric`, Explicit VR Little Endian or `syntax` (RLELossless, JPEG2000Lossless,
    JPEGBaseline8Bit: YBR_FULL_422 by OpenCV's JPEG encoder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, np.uint8)
    ds = _base(UltrasoundMultiFrameImageStorage, patient_id, instance, series, study, burned_in, identity)
    ds.NumberOfFrames = len(frames)
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
    if cine_rate is not None:
        ds.CineRate = cine_rate
    if display_rate is not None:
        ds.RecommendedDisplayFrameRate = display_rate
    if regions:
        ds.SequenceOfUltrasoundRegions = Sequence([_region(**r) for r in regions])
    _pixels(ds, frames, photometric)
    return _save(ds, path, syntax, frames, photometric)


def write_series(folder: Path, frames: np.ndarray, *, order=None, patient_id: str = "MRNZQX00001",
                 names=None, **kw) -> Path:
    """A single-frame series: one file per frame, InstanceNumber 1..N, written in `order` under `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    order = range(len(frames)) if order is None else order
    for i in order:
        ds = _base(UltrasoundImageStorage, patient_id, i + 1, kw.get("series", 1), kw.get("study", 1),
                   kw.get("burned_in", "NO"), kw.get("identity", True))
        _pixels(ds, np.asarray(frames[i : i + 1], np.uint8), kw.get("photometric", "MONOCHROME2"))
        name = names[i] if names else f"IM{(5 * i) % len(frames):04d}.dcm"  # file names out of frame order
        _save(ds, folder / name, None, frames[i : i + 1], kw.get("photometric", "MONOCHROME2"))
    return folder


def _region(x0: int, y0: int, x1: int, y1: int, spatial_format: int = 1, data_type: int = 1) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat = spatial_format
    r.RegionDataType = data_type
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3  # cm
    r.PhysicalDeltaX = r.PhysicalDeltaY = 0.01
    return r


def _save(ds: Dataset, path: Path, syntax, frames: np.ndarray, photometric: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta = meta
    if syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax, encoding_plugin="pydicom" if syntax == RLELossless else "pylibjpeg")
    elif syntax == JPEGBaseline8Bit:
        # OpenCV's (libjpeg's) baseline JPEG of each frame, as a scanner's DICOM export holds it
        def jpeg(f):
            img = cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if f.ndim == 3 else f
            return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()

        ds.PixelData = encapsulate([jpeg(f) for f in frames])
        ds["PixelData"].VR = "OB"
        ds.PhotometricInterpretation = "YBR_FULL_422" if frames.ndim == 4 else "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif syntax is not None:
        raise ValueError(f"no writer for {syntax}")
    ds.save_as(path, enforce_file_format=True)
    return path
