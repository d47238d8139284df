"""Datasets for evaluation and training: SocioSeg in any of its layouts, and a synthetic
stand-in with the same shape for tests and benchmarks."""

from .socioseg import (
    HUB_ID,
    TASKS,
    BadSampleError,
    DatasetFormatError,
    DatasetNotFoundError,
    Sample,
    SkippedSample,
    SocioSegDataset,
    normalize_task,
    read_task_map,
)
from .synthetic import make_synthetic_sample, write_synthetic_socioseg

__all__ = [
    "HUB_ID", "TASKS", "BadSampleError", "DatasetFormatError", "DatasetNotFoundError",
    "Sample", "SkippedSample", "SocioSegDataset", "normalize_task", "read_task_map",
    "make_synthetic_sample", "write_synthetic_socioseg",
]
