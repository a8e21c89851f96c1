"""--cache-data: the decoded crops read back are bit-identical to decoding, a cache made with another data config or
other files is never used, and a half-written cache (an exception, kill -9) is never read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.data.images import BLUE, CONFIG, GREEN, RED, colour_image, colour_vit, corrupt
from tomebench.data import cache, discover, make_loader
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "data"
    for i, colour in enumerate([RED, GREEN, BLUE, RED, GREEN, BLUE, BLUE]):
        colour_image(root / "abc"[i % 3] / f"{i}.png", colour, i, (40 + 9 * i, 70))
    corrupt(root / "b" / "9.jpg", "garbage")
    return root


def decode(images, config=CONFIG, batch_size=3):
    return lambda: make_loader(images, config, batch_size, workers=0, pin_memory=False)


def same(a, b) -> bool:
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


def test_cached_batches_are_bit_identical_to_decoding(tmp_path, folder):
    images = discover(folder)
    decoded = list(decode(images)())
    first = list(cache.batches(tmp_path / "c", images, CONFIG, None, 3, False, decode(images)))
    entry = cache.Cache(tmp_path / "c", cache.key(images, CONFIG), images, CONFIG["input_size"])
    assert entry.complete and same(first, decoded)

    def no_decoding():
        raise AssertionError("a complete cache is read, not decoded again")

    again = list(cache.batches(tmp_path / "c", images, CONFIG, None, 3, False, no_decoding))
    assert same(again, decoded)
    assert not torch.cat([b[2] for b in again]).all()  # the corrupt file is still unreadable, and counted as such
    assert [p.name for p in (tmp_path / "c").iterdir()] == [entry.name]  # nothing else left behind


def test_another_data_config_or_other_files_are_another_cache(tmp_path, folder):
    images = discover(folder)
    base = cache.key(images, CONFIG)
    for change in ({"crop_pct": 0.9}, {"interpolation": "bilinear"}, {"input_size": (3, 128, 128)}, {"mean": (0,) * 3}):
        assert cache.key(images, CONFIG | change) != base
    assert cache.key(images.take(range(4)), CONFIG) != base  # a --limit or a Ray shard is its own
    assert cache.key(images, CONFIG, transform="Resize(224)") != base
    assert cache.key(images, CONFIG, transform=lambda img: img) is None  # nothing stable to key a lambda on
    path = images.files[0]
    colour_image(path, BLUE, 99, (44, 71))  # the same name, other pixels
    assert cache.key(images, CONFIG) != base


def test_a_pass_stopped_half_way_leaves_no_cache(tmp_path, folder):
    images = discover(folder)
    written = cache.batches(tmp_path / "c", images, CONFIG, None, 3, False, decode(images))
    next(iter(written))
    written.close()  # the pass raised or was interrupted after one batch
    assert list((tmp_path / "c").iterdir()) == []


def test_a_cache_killed_while_written_is_never_read(tmp_path, folder):
    script = textwrap.dedent(
        f"""
        import sys, time
        from tests.data.images import CONFIG
        from tomebench.data import cache, discover, make_loader

        images = discover({str(folder)!r})

        def slow():
            for k, batch in enumerate(make_loader(images, CONFIG, 3, workers=0, pin_memory=False)):
                yield batch
                if k == 0:
                    print("one batch written", flush=True)
                    time.sleep(60)

        for _ in cache.batches({str(tmp_path / "c")!r}, images, CONFIG, None, 3, False, slow):
            pass
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert child.stdout.readline().strip() == "one batch written"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    images = discover(folder)
    leftovers = list((tmp_path / "c").iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".partial")  # half-written, under another name
    assert not cache.Cache(tmp_path / "c", cache.key(images, CONFIG), images, CONFIG["input_size"]).complete
    decoded = list(decode(images)())
    assert same(list(cache.batches(tmp_path / "c", images, CONFIG, None, 3, False, decode(images))), decoded)


def test_a_sweep_with_cache_data_reads_the_cache_the_second_time(tmp_path, folder, monkeypatch):
    weights = tmp_path / "colour3.safetensors"
    save_file({k: v.contiguous() for k, v in colour_vit(num_classes=3).state_dict().items()}, str(weights))
    spec = RunSpec(
        model="test_vit",
        checkpoint=weights,
        model_kwargs={"num_classes": 3},
        data=str(folder),
        r=(4,),
        repeats=1,
        batch_sizes=3,
        workers=0,
        device="cpu",
    )

    def columns(rows):
        return [(row.top1, row.top5, row.n_images, row.n_unreadable, row.error) for row in rows]

    plain = columns(run_sweep(spec))
    assert plain[0][2] == 7 and plain[0][3] == 1
    assert columns(run_sweep(replace(spec, cache_data=tmp_path / "c"))) == plain
    assert len(list((tmp_path / "c").iterdir())) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds these crops")

    monkeypatch.setattr("tomebench.data.make_loader", no_decoding)
    assert columns(run_sweep(replace(spec, cache_data=tmp_path / "c"))) == plain
