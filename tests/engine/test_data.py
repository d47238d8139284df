"""SocioSeg loading: every layout gives back the synthetic set's exact pixels, queries and
tasks, and bad samples, missing splits and an uncached hub id fail clearly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socio_reasoner.data import (
    BadSampleError,
    DatasetFormatError,
    DatasetNotFoundError,
    Sample,
    SkippedSample,
    SocioSegDataset,
    make_synthetic_sample,
    write_synthetic_socioseg,
)
from socio_reasoner.errors import SocioReasonerError

SIZE = 64
SPLITS = {"train": 2, "val": 1, "test": 3}
LAYOUTS = ("raw", "parquet", "saved", "geotiff")
BAD = {"test-bad-empty-question": "empty question",
       "test-bad-mask-size": f"mask is {SIZE // 2}x{SIZE // 2} but the images are {SIZE}x{SIZE}"}
UNREADABLE = {"raw": "unreadable map image (map.png: UnidentifiedImageError)",
              "geotiff": "unreadable map image (map.tif: RasterOpenError)",
              "parquet": "unreadable map image (map_image: UnidentifiedImageError)",
              "saved": "unreadable map image (map_image: UnidentifiedImageError)"}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Each test gets an empty Hugging Face cache: nothing leaks between tests or to ~."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Synthetic set per layout, with the three bad test samples, written once."""
    cache = {}

    def get(layout: str, bad: bool = True) -> Path:
        if (layout, bad) not in cache:
            root = tmp_path_factory.mktemp(f"socioseg_{layout}")
            cache[layout, bad] = write_synthetic_socioseg(
                root, SPLITS, size=SIZE, layout=layout, bad_samples=bad)
        return cache[layout, bad]
    return get


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_same(got: Sample, want: Sample, georeferenced: bool = False) -> None:
    assert isinstance(got, Sample)
    assert (got.id, got.query, got.task) == (want.id, want.query, want.task)
    for name in ("map", "sat"):
        arr = getattr(got, name)
        assert arr.dtype == np.uint8 and arr.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(arr, getattr(want, name))
    assert got.mask.dtype == bool and got.mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(got.mask, want.mask)
    if georeferenced:
        assert got.grid == want.grid and got.grid.crs.to_epsg() == 3857
    else:
        assert got.grid is None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_round_trips_pixels_queries_and_tasks(written, layout):
    root = written(layout)
    for split, n in SPLITS.items():
        ds = SocioSegDataset.open(root, split)
        assert ds.layout == layout and ds.split == split
        good = [s for s in ds if isinstance(s, Sample)]
        assert len(good) == n
        for i, sample in enumerate(good):
            want = make_synthetic_sample(split, i, SIZE, georeferenced=layout == "geotiff")
            _assert_same(sample, want, georeferenced=layout == "geotiff")
            _assert_same(ds.get(i), want, georeferenced=layout == "geotiff")
    ds = SocioSegDataset.open(root, "test")
    assert [ds.get(i).task for i in range(3)] == ["Socio-name", "Socio-class", "Socio-function"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_samples_are_reported_with_reasons_and_counted(written, layout):
    ds = SocioSegDataset.open(written(layout), "test")
    assert len(ds) == SPLITS["test"] + 3
    assert ds.ids()[-3:] == list(BAD) + ["test-bad-unreadable"]
    items = list(ds)
    assert [type(x) for x in items] == [Sample] * 3 + [SkippedSample] * 3
    want = [SkippedSample(i, r) for i, r in BAD.items()]
    want.append(SkippedSample("test-bad-unreadable", UNREADABLE[layout]))
    assert items[3:] == want and ds.skipped == want
    list(ds)   # a second pass does not count them twice
    assert len(ds.skipped) == 3
    for index, skipped in zip(range(3, 6), want, strict=True):
        with pytest.raises(BadSampleError, match=skipped.reason.replace("(", r"\(").replace(")", r"\)")):
            ds.get(index)


def test_raw_folder_problems_each_have_their_reason(written, tmp_path):
    root = _copy(written("raw", bad=False), tmp_path / "raw")
    d = sorted((root / "train").iterdir())
    (d[0] / "sat.png").unlink()
    Image.new("RGB", (SIZE // 2, SIZE // 2)).save(d[1] / "sat.png")
    for name, content in (("noquestion", None), ("badjson", "{not json"), ("list", "[1]"),
                          ("blank", json.dumps({"problem": "   "}))):
        shutil.copytree(d[1], root / "train" / name)
        q = root / "train" / name / "question.json"
        q.unlink() if content is None else q.write_text(content)
    ds = SocioSegDataset.open(root, "train")
    assert all(isinstance(s, SkippedSample) for s in ds)
    assert {s.id: s.reason for s in ds.skipped} == {
        "train-0000": "missing sat image (sat.png or sat.tif)",
        "train-0001": f"map is {SIZE}x{SIZE} but sat is {SIZE // 2}x{SIZE // 2}",
        "noquestion": "missing question.json", "badjson": "question.json is not a JSON object",
        "list": "question.json is not a JSON object", "blank": "empty question"}


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1"])
def test_masks_of_any_mode_and_level_are_thresholded_above_zero(written, tmp_path, mode):
    root = _copy(written("raw", bad=False), tmp_path / "raw")
    want = make_synthetic_sample("val", 0, SIZE).mask
    levels = np.where(want, np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 200 + 1, 0)
    img = Image.fromarray(levels.astype(np.uint8))
    if mode == "RGBA":   # alpha on everywhere must not count as foreground
        img = Image.merge("RGBA", [img, img, img, Image.new("L", img.size, 255)])
    elif mode == "P":
        img = img.convert("P")
    else:
        img = img.convert(mode) if mode != "1" else Image.fromarray(want)
    img.save(root / "val" / "val-0000" / "mask.png")
    np.testing.assert_array_equal(SocioSegDataset.open(root, "val").get(0).mask, want)


def test_task_map_csv_overrides_tasks_and_unknown_task_is_none(written, tmp_path):
    root = _copy(written("raw", bad=False), tmp_path / "raw")
    q = root / "test" / "test-0002" / "question.json"
    q.write_text(json.dumps({"problem": "park"}))
    ds = SocioSegDataset.open(root, "test")
    assert [s.task for s in ds] == ["Socio-name", "Socio-class", None]
    mapping = tmp_path / "tasks.csv"
    with open(mapping, "w", newline="") as f:
        csv.writer(f).writerows([["id", "task"], ["test-0000", "function"],
                                 ["test-0002", "Socio-class"], ["test-0001", ""],
                                 ["not-in-set", "Socio-name"]])
    ds = SocioSegDataset.open(root, "test", task_map=mapping)
    assert [s.task for s in ds] == ["Socio-function", "Socio-class", "Socio-class"]
    bad = tmp_path / "bad.csv"
    bad.write_text("sample,kind\ntest-0000,Socio-name\n")
    with pytest.raises(DatasetFormatError, match="id,task"):
        SocioSegDataset.open(root, "test", task_map=bad)


def test_task_column_in_parquet_is_overridden_too(written, tmp_path):
    mapping = tmp_path / "tasks.csv"
    mapping.write_text("id,task\nval-0000,socio_function\n")
    ds = SocioSegDataset.open(written("parquet"), "val", task_map=mapping)
    assert ds.get(0).task == "Socio-function"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_split_lists_the_splits_found(written, layout):
    with pytest.raises(DatasetNotFoundError, match="No split 'ood'") as info:
        SocioSegDataset.open(written(layout), "ood")
    assert all(s in str(info.value) for s in SPLITS)


def test_val_and_validation_stand_for_each_other(written, tmp_path):
    src = written("parquet") / "data"
    root = tmp_path / "pq"
    for split in SPLITS:   # <split>/*.parquet, validation spelled out
        name = "validation" if split == "val" else split
        (root / name).mkdir(parents=True)
        shutil.copy(src / f"{split}-00000-of-00001.parquet", root / name / "part-0.parquet")
    ds = SocioSegDataset.open(root, "val")
    assert ds.ids() == ["val-0000"]
    raw = _copy(written("raw", bad=False), tmp_path / "raw")
    (raw / "val").rename(raw / "validation")
    assert SocioSegDataset.open(raw, "validation").ids() == ["val-0000"]
    assert SocioSegDataset.open(raw, "val").ids() == ["val-0000"]


@pytest.mark.parametrize(("rel", "split"), [
    ("data/test-00000-of-00001.parquet", "test"),
    ("data/validation-00000-of-00002-3cc742d323f73634.parquet", "validation"),
    ("default/train/0000.parquet", "train"), ("val/part-0.parquet", "val"),
    ("test.parquet", "test"), ("parquet-test-00001-of-00003.arrow", "test"),
    ("socio_seg-ood_city.arrow", "ood_city")])
def test_split_names_come_from_hub_and_folder_file_names(rel, split):
    from socio_reasoner.data.socioseg import _split_of

    assert _split_of(Path(rel)) == split


def test_single_files_arrow_files_and_single_saved_splits(written, tmp_path):
    want = make_synthetic_sample("val", 0, SIZE)
    single = written("parquet") / "data" / "val-00000-of-00001.parquet"
    _assert_same(SocioSegDataset.open(single, "val").get(0), want)
    saved = written("saved")
    arrow = tmp_path / "arrow"   # the arrow shards of a save_to_disk, as bare files
    for split in SPLITS:
        (arrow / split).mkdir(parents=True)
        shutil.copy(next((saved / split).glob("*.arrow")), arrow / split / "data.arrow")
    ds = SocioSegDataset.open(arrow, "val")
    assert ds.layout == "arrow"
    _assert_same(ds.get(0), want)
    nodict = _copy(saved, tmp_path / "nodict")   # split folders without dataset_dict.json
    (nodict / "dataset_dict.json").unlink()
    for source in (saved / "val", nodict):
        _assert_same(SocioSegDataset.open(source, "val").get(0), want)
    with pytest.raises(DatasetNotFoundError, match="splits found: val"):
        SocioSegDataset.open(saved / "val", "test")


def test_parquet_mirrors_hub_exports(written):
    import datasets
    import pyarrow.parquet as pq

    root = written("parquet")
    assert sorted(p.name for p in (root / "data").iterdir()) == [
        f"{s}-00000-of-00001.parquet" for s in ("test", "train", "val")]
    schema = pq.read_schema(root / "data" / "test-00000-of-00001.parquet")
    assert schema.names == ["id", "problem", "map_image", "sat_image", "mask_label", "task"]
    dd = datasets.load_dataset(str(root), cache_dir=str(root.parent / "hf_cache"))
    assert sorted(dd) == sorted(SPLITS)
    assert isinstance(dd["val"].features["map_image"], datasets.Image)


def test_indexing_ids_and_errors_for_sources_that_do_not_exist(written, tmp_path):
    ds = SocioSegDataset.open(written("raw", bad=False), "test")
    assert len(ds) == 3 and ds.ids() == ["test-0000", "test-0001", "test-0002"]
    assert ds[-1].id == "test-0002"
    with pytest.raises(IndexError):
        ds.get(3)
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        SocioSegDataset.open(tmp_path / "nowhere", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="No SocioSeg data"):
        SocioSegDataset.open(tmp_path / "empty", "test")
    assert issubclass(DatasetNotFoundError, SocioReasonerError)


def test_hub_id_offline_and_not_cached_says_how_to_get_it():
    with pytest.raises(DatasetNotFoundError) as info:
        SocioSegDataset.open("vvangfaye/SocioSeg", "test")
    msg = str(info.value)
    assert "offline and not in the local cache" in msg
    assert "load_dataset('vvangfaye/SocioSeg')" in msg and "parquet" in msg


def test_hub_id_offline_reads_a_cached_copy(written, tmp_path):
    """A copy prepared by ``datasets`` under HF_HOME opens offline, under its hub id."""
    import datasets

    src = written("parquet") / "data"
    files = {s: [str(src / f"{s}-00000-of-00001.parquet")] for s in SPLITS}
    builder = datasets.load_dataset_builder("parquet", data_files=files,
                                            cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    cached = tmp_path / "hf_home" / "datasets" / "vvangfaye___socio_seg" / "default" / "0.0.0"
    shutil.copytree(prepared, cached / prepared.name)
    for f in (cached / prepared.name).glob("parquet-*.arrow"):
        f.rename(f.with_name(f.name.replace("parquet-", "socio_seg-")))
    ds = SocioSegDataset.open("vvangfaye/SocioSeg", "val")
    assert ds.layout == "hub"
    _assert_same(ds.get(0), make_synthetic_sample("val", 0, SIZE))
    with pytest.raises(DatasetNotFoundError, match="splits found: train, val, test"):
        SocioSegDataset.open("vvangfaye/SocioSeg", "ood")


def test_synthetic_content_is_seeded_and_sensible():
    a, b = make_synthetic_sample("train", 3, 96), make_synthetic_sample("train", 3, 96)
    c = make_synthetic_sample("train", 3, 96, seed=1)
    assert np.array_equal(a.map, b.map) and np.array_equal(a.sat, b.sat) and a.query == b.query
    assert not np.array_equal(a.sat, c.sat)
    assert 0 < a.mask.mean() < 0.5 and a.query and a.task == "Socio-name"
    inside = a.map[a.mask]   # the mask covers one coloured place class on the map
    assert len(np.unique(inside, axis=0)) == 1 and tuple(inside[0]) != (242, 239, 233)
    with pytest.raises(ValueError, match="layout"):
        write_synthetic_socioseg("unused", layout="zip")
