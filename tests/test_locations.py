"""One answer to "local path or URL?" for inputs, outputs, the lock and the report."""

from __future__ import annotations

import os

import pytest

from svdflow.locations import Location, is_url


@pytest.mark.parametrize("text", ["renders/x", "/abs/renders", "~/x", "notes::draft.png", "a::b::c.png",
                                  "file:///abs/renders", "local:///abs/renders"])
def test_local_paths(text):
    assert not is_url(text)
    assert Location.parse(text).is_local


@pytest.mark.parametrize("text, protocols", [
    ("memory://x", ("memory",)),
    ("s3://bucket/key", ("s3",)),
    ("simplecache::s3://bucket/key", ("simplecache", "s3")),
    ("simplecache::memory://bucket/x", ("simplecache", "memory")),
    ("filecache::simplecache::gs://b/k", ("filecache", "simplecache", "gs")),
    ("simplecache::file:///abs/city.png", ("simplecache", "file")),
    ("https://example.org/a.png", ("https",)),
])
def test_urls_keep_their_text_and_name_where_the_bytes_live(text, protocols):
    location = Location.parse(text, base="/manifests")
    assert is_url(text)
    assert (location.text, location.protocols, location.protocol) == (text, protocols, protocols[-1])
    with pytest.raises(ValueError, match="is a URL, not a local path"):
        _ = location.path


def test_local_paths_resolve_against_the_base_and_join_names():
    assert Location.parse("images/a.png", base="/m").path == "/m/images/a.png"
    assert Location.parse("/abs/a.png", base="/m").path == "/abs/a.png"
    assert Location.parse("~/a.png", base="/m").path == os.path.expanduser("~/a.png")
    assert Location.parse("file:///abs/out", base="/m").path == "/abs/out"
    assert Location.parse("notes::draft.png", base="/m").path == "/m/notes::draft.png"
    assert Location.parse("/out").join("a.mp4").text == "/out/a.mp4"
    assert Location.parse("simplecache::memory://bucket/x/").join("a.mp4").text == "simplecache::memory://bucket/x/a.mp4"
