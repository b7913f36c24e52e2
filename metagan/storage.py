"""Write outputs to a local folder or an ``s3://bucket/prefix`` (boto3; endpoint and credentials
come from the environment, e.g. ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``)."""

from __future__ import annotations

from pathlib import Path


class OutputLocation:
    def __init__(self, uri: str | Path):
        self.uri = str(uri)
        self.is_s3 = self.uri.startswith("s3://")
        if self.is_s3:
            import boto3

            bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self.s3 = boto3.client("s3")
        else:
            self.root = Path(self.uri)

    def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` at ``relative`` under this location; returns its full URI or path."""
        if self.is_s3:
            key = f"{self.prefix}/{relative}" if self.prefix else relative
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
            return f"s3://{self.bucket}/{key}"
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return str(path)
