"""Webdataset shards read from URLs (webdataset's `gopen`): `pipe:` commands and http via curl,
the same samples as the local files, and one-line errors naming the URL when a stream fails."""

from __future__ import annotations

import functools
import shlex
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from compress.data.datasets import DataError
from compress.data.scenes_files import write_scenes
from compress.data.shards import WdsDataset, is_url, iter_tar_samples
from compress.data.transforms import image_transform
from compress.models.clip import OPENAI_MEAN, OPENAI_STD
from edgeclip.inputs import check_train_data
from edgeclip.recipe import RecipeError, load_recipe
from tests.helpers import write_tiny_recipe

TRANSFORM = image_transform(32, OPENAI_MEAN, OPENAI_STD)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two train shards of 6 samples (`wds/train-00000{0,1}.tar`) and a truncated copy."""
    out = tmp_path_factory.mktemp("url") / "scenes"
    write_scenes(out, seed=0, image_size=32, sizes={"train": 12}, shard_size=6)
    data = (out / "wds/train-000001.tar").read_bytes()
    (out / "wds/cut.tar").write_bytes(data[: len(data) // 2])
    return out


@pytest.fixture(scope="module")
def http(root) -> str:
    """`root` served by a real HTTP server on localhost: its base URL."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (webdataset opens http:// URLs with it)")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _pipe(path: Path) -> str:
    return f"pipe:cat {shlex.quote(str(path))}"


def test_is_url():
    assert is_url("pipe:cat x.tar") and is_url("https://h/x.tar") and is_url("s3://b/x.tar")
    assert not is_url("wds/x.tar") and not is_url("/abs/x.tar") and not is_url(r"C:\wds\x.tar")


@pytest.mark.parametrize("via", ["pipe", "http"])
def test_url_gives_the_local_samples(root, via, request):
    for name in ("train-000000.tar", "train-000001.tar"):
        local = root / "wds" / name
        url = _pipe(local) if via == "pipe" else f"{request.getfixturevalue('http')}/wds/{name}"
        got = list(iter_tar_samples(url))
        assert got == list(iter_tar_samples(local)) and len(got) == 6


def test_wds_dataset_over_a_pipe_pattern(root):
    pattern = "wds/train-{000000..000001}.tar"
    local = WdsDataset(str(root / pattern), TRANSFORM, shuffle_buffer=4, seed=3)
    piped = WdsDataset(f"pipe:cat {root}/{pattern}", TRANSFORM, shuffle_buffer=4, seed=3)
    assert piped.shards[1] == f"pipe:cat {root}/wds/train-000001.tar"
    for ds in (local, piped):
        ds.set_epoch(1)
    a, b = list(local), list(piped)
    assert len(a) == len(b) == 12
    for x, y in zip(a, b, strict=True):
        assert x["caption"] == y["caption"] and x["index"] == y["index"]
        assert torch.equal(x["image"], y["image"])


def _one_line_error(url: str, *parts: str) -> None:
    with pytest.raises(DataError) as err:
        list(iter_tar_samples(url))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{url}: "), message
    for part in parts:
        assert part in message, (part, message)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("pipe:false", "command exited with status 1"),
        ("pipe:cat /no/such/shard.tar", "command exited with status 1"),
        ("pipe:no-such-command-edgeclip", "status 127 (command not found)"),
        ("nosuch://bucket/x.tar", "cannot open: no gopen handler defined"),
    ],
)
def test_failing_stream_is_one_line(url, says):
    _one_line_error(url, says)


def test_http_404_is_one_line(http):
    _one_line_error(f"{http}/wds/no-such-000000.tar", "status 22", "HTTP error")


def test_truncated_stream(root):
    cut = _pipe(root / "wds/cut.tar")
    _one_line_error(cut, "truncated at sample 'train-0000", "were read")
    ds = WdsDataset([cut, _pipe(root / "wds/train-000000.tar")], TRANSFORM, skip_bad=True)
    got = list(ds)
    assert ds.truncated_shards == 1 and ds.skipped == 1
    assert 6 < len(got) < 12  # the cut shard's samples before the cut, then all of the next


def test_check_train_data_leaves_url_shards_to_the_reader(tmp_path):
    def check(train: str) -> None:
        check_train_data(load_recipe(write_tiny_recipe(tmp_path), [f"data.train={train}"]))

    check("https://example.invalid/train-{000000..000009}.tar")
    check("pipe:curl -s https://example.invalid/train-{000000..000009}.tar")
    with pytest.raises(RecipeError, match="no shard file matches"):
        check(f"{tmp_path}/train-{{000000..000009}}.tar")
