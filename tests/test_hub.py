"""The test hub answers huggingface_hub's own calls the way huggingface.co does.

huggingface_hub runs in this process with the hub's endpoint passed explicitly (its constants read
``HF_ENDPOINT`` once, at import).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub import BAD_TOKEN, Hub

WEIGHTS = bytes(range(256)) * 1024  # 256 KiB: an LFS file


def _api(hub: Hub, token: str | None = None) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token or False)


def test_model_info_lists_files_with_sizes_and_the_commit(hub: Hub) -> None:
    # Given a repository with a small file and a weight file in the hub's folder
    hub.add_repo("org/m", {"config.json": b"{}", "model.safetensors": WEIGHTS, "sub/x.txt": b"x"})
    # When huggingface_hub asks for its info with file metadata
    info = _api(hub).model_info("org/m", files_metadata=True)
    # Then it has every file, its size, the LFS sha256 of the weights, and the commit
    assert info.sha == hub.commit("org/m")
    assert info.siblings is not None
    by_name = {s.rfilename: s for s in info.siblings}
    assert sorted(by_name) == ["config.json", "model.safetensors", "sub/x.txt"]
    assert by_name["model.safetensors"].size == len(WEIGHTS)
    assert by_name["model.safetensors"].lfs is not None
    assert by_name["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert by_name["config.json"].lfs is None
    # And the listings vLLM reads agree
    assert sorted(_api(hub).list_repo_files("org/m")) == sorted(by_name)


def test_a_download_lands_in_the_cache_at_the_commit(hub: Hub, tmp_path: Path) -> None:
    hub.add_repo("org/m", {"config.json": b'{"a": 1}', "model.safetensors": WEIGHTS})
    cache = tmp_path / "cache"
    path = hf_hub_download(
        "org/m", "model.safetensors", cache_dir=cache, endpoint=hub.endpoint, token=False
    )
    assert Path(path).read_bytes() == WEIGHTS
    commit = hub.commit("org/m")
    assert Path(path) == cache / "models--org--m" / "snapshots" / commit / "model.safetensors"
    blob = cache / "models--org--m" / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()
    assert blob.read_bytes() == WEIGHTS
    assert (cache / "models--org--m" / "refs" / "main").read_text() == commit


def test_a_dropped_connection_is_resumed_with_a_range(hub: Hub, tmp_path: Path) -> None:
    # Given a 12 MiB file and a hub that closes the connection after 11 MiB of it, once
    # (huggingface_hub writes in 10 MiB chunks: a drop within the first chunk starts over)
    big = WEIGHTS * 48
    hub.add_repo("org/m", {"model.safetensors": big})
    hub.drop_once("org/m", "model.safetensors", 11 << 20)
    # When huggingface_hub downloads it
    path = hf_hub_download(
        "org/m", "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint, token=False
    )
    # Then its second request asked for the rest of what it had written, and the file is whole
    first, second = hub.downloads("model.safetensors")
    assert (first.range, first.sent) == (None, 11 << 20)
    assert (second.status, second.range) == (206, f"bytes={len(big) - second.sent}-")
    assert 0 < len(big) - second.sent <= 11 << 20
    assert Path(path).read_bytes() == big


def test_each_refusal_is_the_exception_huggingface_hub_raises_for_the_real_hub(hub: Hub) -> None:
    hub.add_repo("org/m", {"config.json": b"{}"})
    hub.add_repo("org/gated", {"config.json": b"{}"})
    hub.add_repo("org/bad", {"config.json": b"{}"})
    hub.gate("org/gated", "hf_right")
    hub.refuse("org/bad", BAD_TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        _api(hub).model_info("org/none")
    with pytest.raises(RevisionNotFoundError):
        _api(hub).model_info("org/m", revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/m", "nope.json", endpoint=hub.endpoint, token=False)
    with pytest.raises(GatedRepoError) as no_token:
        _api(hub).model_info("org/gated")
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong_token:
        _api(hub, "hf_wrong").model_info("org/gated")
    assert wrong_token.value.response.status_code == 403
    assert _api(hub, "hf_right").model_info("org/gated").sha == hub.commit("org/gated")
    with pytest.raises(HfHubHTTPError) as bad:
        _api(hub, "hf_x").model_info("org/bad")
    assert bad.value.response.status_code == 401
    assert not isinstance(bad.value, RepositoryNotFoundError)
    # And the log has who asked with which token
    assert [r.token for r in hub.log if "org/gated" in r.path] == [None, "hf_wrong", "hf_right"]


def test_a_changed_file_is_a_new_commit(hub: Hub) -> None:
    hub.add_repo("org/m", {"config.json": b"{}"})
    before = hub.commit("org/m")
    hub.add_repo("org/m", {"config.json": b'{"b": 2}'})
    assert hub.commit("org/m") != before
    assert _api(hub).model_info("org/m", revision=hub.commit("org/m")).sha == hub.commit("org/m")


def test_the_calls_vllm_makes_online_are_answered(hub: Hub, tmp_path: Path) -> None:
    # vLLM 0.32 (weight_utils.download_weights_from_hf) lists the top level with HfFileSystem,
    # then snapshot_download(allow_patterns=...) the chosen weights.
    from huggingface_hub import HfFileSystem, snapshot_download

    hub.add_repo(
        "org/m",
        {"config.json": b"{}", "model.safetensors": WEIGHTS, "original/x.pth": b"\0" * 10},
    )
    listing = HfFileSystem(endpoint=hub.endpoint, token=False).ls("org/m", detail=False)
    assert sorted(listing) == ["org/m/config.json", "org/m/model.safetensors", "org/m/original"]
    folder = snapshot_download(
        "org/m",
        allow_patterns="*.safetensors",
        ignore_patterns=["original/**/*"],
        cache_dir=tmp_path,
        endpoint=hub.endpoint,
        token=False,
    )
    assert (Path(folder) / "model.safetensors").read_bytes() == WEIGHTS
    assert not (Path(folder) / "config.json").exists()
