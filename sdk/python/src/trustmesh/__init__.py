"""trustmesh: the Python client of the trustmesh data-quality platform.

    import trustmesh
    client = trustmesh.Client("http://127.0.0.1:50051", api_key, tenant="acme")
    dataset = client.upload_dataframe(df, "reviews", id_column="id")
    report = client.analyze(dataset.name, label="label").wait().output
    client.issues(report, issue="label")          # a DataFrame, least trustworthy first
    client.set_corrections(report, relabel={17: "positive"}, exclude=[42])
    clean = client.export_cleanset(report, label_column="label")

The protobuf and gRPC stubs (`trustmesh.v1`, `trustmesh.events.v1`) are generated from the
repository's `proto/` when the package is built.
"""

from trustmesh.client import (
    Analysis,
    Client,
    Exported,
    JobFailed,
    TrustmeshError,
    issue_name,
    issue_type,
)

__all__ = [
    "Analysis",
    "Client",
    "Exported",
    "JobFailed",
    "TrustmeshError",
    "issue_name",
    "issue_type",
]
