"""The S3 test server's credentials (imported as ``s3_helpers``): moto accepts any, boto3
needs some; a server under test gets them in its environment."""

from __future__ import annotations

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "changeover-test",
    "AWS_SECRET_ACCESS_KEY": "changeover-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
