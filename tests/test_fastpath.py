"""The device-resident batch feeder on CPU tensors: every slice once per epoch, seeded, augmented in range."""

import numpy as np
import pandas as pd
import pytest
import torch

from liverlib.data.cache import SliceCache
from liverlib.labels import LABELS
from liverlib.training.device_batches import GpuBatches, fits_on_device, load_slices

SIZE = 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    for vid, n in ((3, 7), (5, 6)):
        image = (rng.random((n, SIZE, SIZE)) * 0.9 + 0.05).astype(np.float16)
        image[:, 0, 0] = vid + np.arange(n) / 100  # a tag per slice: volume id + slice / 100
        np.save(root / f"{vid}_image.npy", image)
        np.save(root / f"{vid}_mask.npy", rng.integers(0, 3, (n, SIZE, SIZE)).astype(np.uint8))
    return SliceCache(root)


@pytest.fixture(scope="module")
def index():
    rows = [(5, 4), (3, 0), (3, 6), (5, 0), (3, 2), (5, 5), (3, 1), (5, 2), (3, 3), (3, 5), (5, 1)]
    return pd.DataFrame(rows, columns=["volume_id", "slice_idx"]).set_index(pd.Index(range(100, 111)))


def _tags(x: torch.Tensor) -> list[float]:
    return [round(float(t), 2) for t in x[:, 0, 0, 0].half().float()]


def test_load_slices_keeps_the_index_order(cache, index):
    image, mask = load_slices(cache, index)
    assert image.shape == (11, 1, SIZE, SIZE) and image.dtype == torch.float16 and mask.dtype == torch.uint8
    assert _tags(image) == [round(v + s / 100, 2) for v, s in zip(index.volume_id, index.slice_idx)]
    assert torch.equal(mask[1], torch.from_numpy(np.array(cache.mask(3)[0])))


def test_every_slice_once_per_epoch_and_a_short_last_batch(cache, index):
    feed = GpuBatches(cache, index, batch_size=4, device="cpu", seed=1, augment=False)
    assert len(feed) == 3 and feed.num_slices == 11 and feed.resident and fits_on_device(10**12, torch.device("cpu"))
    batches = list(feed.epoch(1))
    assert [len(x) for x, _ in batches] == [4, 4, 3]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, SIZE, SIZE)
    tags = sorted(t for x, _ in batches for t in _tags(x))
    assert tags == sorted(round(v + s / 100, 2) for v, s in zip(index.volume_id, index.slice_idx))


def test_epochs_are_seeded(cache, index):
    feed = GpuBatches(cache, index, batch_size=4, device="cpu", seed=1, augment=True)
    a, b, c = (list(feed.epoch(e)) for e in (2, 2, 3))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_augmented_batches_stay_in_range(cache, index):
    feed = GpuBatches(cache, index, batch_size=11, device="cpu", seed=0, augment=True, elastic_alpha=120.0,
                      elastic_sigma=8.0)  # fmt: skip
    assert feed.config.elastic_alpha == 120.0 and feed.config.elastic_sigma == 8.0
    x, y = next(feed.epoch(1))
    assert x.min() >= 0 and x.max() <= 1 and set(y.unique().tolist()) <= set(LABELS.values())


def test_bad_arguments(cache, index):
    with pytest.raises(ValueError, match="batch_size"):
        GpuBatches(cache, index, batch_size=0, device="cpu", seed=0)
    with pytest.raises(ValueError, match="no slices"):
        GpuBatches(cache, index.iloc[:0], batch_size=2, device="cpu", seed=0)
