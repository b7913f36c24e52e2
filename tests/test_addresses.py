"""Output addresses (metagan.addresses): a local folder or ``s3://bucket[/prefix]``, and nothing
in between: a malformed address is bad input naming it, never a local folder named after it."""

import pytest

from metagan.addresses import is_s3, s3_address
from metagan.errors import BadInput
from metagan.storage import OutputLocation

MALFORMED = {
    "s3://": "no bucket",
    "s3:///x": "no bucket",
    "S3://bucket/x": "s3:// in lowercase",
    "s3:/bucket/x": "s3:// in lowercase",
    "s3:bucket": "s3:// in lowercase",
    "gs://bucket/x": "s3:// in lowercase",
    "file:///tmp/x": "s3:// in lowercase",
    "s3://b/x": "'b' is not an S3 bucket name",
    "s3://My_Bucket/x": "'My_Bucket' is not an S3 bucket name",
    "s3://-bucket": "'-bucket' is not an S3 bucket name",
    "s3://" + "b" * 64: "is not an S3 bucket name",
}


@pytest.mark.parametrize("address", MALFORMED)
def test_a_malformed_s3_address_is_bad_input_naming_it_not_a_local_folder(address, tmp_path, monkeypatch):
    """Guarantee: an address with a scheme that is not exactly s3://bucket[/prefix] is BadInput
    (exit 3) naming it and what is wrong; nothing is written (``--out s3://`` wrote ./s3:/X)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=MALFORMED[address]) as caught:
        OutputLocation(address).write("X/00000.png", b"png")
    assert repr(address) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("address, parts", [
    ("s3://bucket", ("bucket", "")),
    ("s3://my-bucket.example/night/one/", ("my-bucket.example", "night/one")),
    ("s3://123", ("123", "")),
])
def test_a_well_formed_s3_address_gives_its_bucket_and_prefix(address, parts):
    """Guarantee: s3://bucket[/prefix] with a valid bucket name is S3, the prefix without its slashes."""
    assert s3_address(address) == parts and is_s3(address)


@pytest.mark.parametrize("path", ["out/generated", "/abs/out", "./s3", "s3", "out:2024/x", "a/s3://b"])
def test_a_plain_path_stays_a_local_folder(path):
    """Guarantee: a path without a scheme is a local folder, whatever characters it holds."""
    assert s3_address(path) is None and not OutputLocation(path).is_s3
