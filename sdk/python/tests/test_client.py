"""The Python client against a running standalone mesh: upload a DataFrame, analyse it, read the
label issues, correct rows and export the cleanset; another tenant's key sees nothing."""

import numpy as np
import pandas as pd
import pytest

import grpc
import trustmesh

CLASSES = ["ash", "birch", "cedar"]
FLIPPED = [3, 17, 41, 58, 77, 96, 103, 122, 135, 148]


def noisy_blobs() -> pd.DataFrame:
    """150 rows of three well-separated Gaussian blobs with 10 labels flipped to another class."""
    rng = np.random.default_rng(7)
    centers = np.array([[0, 0, 0, 0], [6, 6, 0, 0], [0, 6, 6, 6]], dtype=float)
    classes = np.repeat(np.arange(3), 50)
    features = centers[classes] + rng.normal(scale=1.0, size=(150, 4))
    labels = [CLASSES[c] for c in classes]
    for row in FLIPPED:
        labels[row] = CLASSES[(classes[row] + 1) % 3]
    df = pd.DataFrame(features.round(4), columns=["f0", "f1", "f2", "f3"])
    df.insert(0, "row_id", [f"tree-{i:03d}" for i in range(150)])
    df["label"] = labels
    return df


@pytest.fixture(scope="module")
def analysed(mesh):
    """acme's client, the uploaded frame, and the SUCCEEDED job of its analysis."""
    client = mesh.tenant("acme")
    df = noisy_blobs()
    dataset = client.upload_dataframe(df, "trees", id_column="row_id")
    assert dataset.row_count == 150
    seen = []
    job = client.analyze(dataset.name, label="label").wait(timeout=300, progress=seen.append)
    assert seen, "wait() reports progress"
    return client, df, job


def test_an_analysis_finds_the_flipped_labels_as_a_dataframe(analysed):
    client, _, job = analysed
    report = client.get_report(job.output)
    assert report.analyzed_row_count == 150
    issues = client.issues(job.output, issue="label")
    assert isinstance(issues, pd.DataFrame)
    assert len(issues) >= 5
    assert issues["is_label"].all()
    assert issues["trust_score"].is_monotonic_increasing
    assert issues["row_id"].str.startswith("tree-").all()
    found = set(issues["row_index"]) & set(FLIPPED)
    assert len(found) * 2 >= len(FLIPPED), f"found {sorted(found)} of {FLIPPED}"
    # A flipped row's suggestion is its true class, not the given label.
    flipped = issues[issues["row_index"].isin(FLIPPED)]
    assert (flipped["suggested_label"] != flipped["given_label"]).all()
    assert client.issues(job.output, issue="label", limit=3).shape[0] == 3
    # Without an issue: rows flagged with any issue the report found.
    assert len(client.issues(job.output)) >= len(issues)


def test_corrections_shape_the_exported_cleanset(analysed):
    client, df, job = analysed
    issues = client.issues(job.output, issue="label")
    relabel_row = int(issues.iloc[0]["row_index"])
    new_label = issues.iloc[0]["suggested_label"]
    exclude_row = int(issues.iloc[1]["row_index"])
    assert client.set_corrections(job.output, relabel={relabel_row: new_label}, exclude=[exclude_row]) == 2
    corrected = client.issues(job.output, issue="label")
    assert corrected.set_index("row_index").loc[relabel_row, "action"] == "relabel"

    clean = client.export_cleanset(job.output, label_column="label")
    assert len(clean) == 149
    assert exclude_row not in set(clean["row_index"])
    assert list(clean.columns[:6]) == list(df.columns)
    for column in ["action", "trust_score", "suggested_label", "is_label", "label_quality"]:
        assert column in clean.columns
    clean = clean.set_index("row_index")
    assert clean.loc[relabel_row, "label"] == new_label
    assert clean.loc[relabel_row, "action"] == "relabel"
    untouched = clean.index[clean["action"] == ""]
    assert (clean.loc[untouched, "label"] == df.loc[untouched, "label"]).all()
    assert (clean["row_id"] == df.loc[clean.index, "row_id"]).all()
    assert clean["trust_score"].between(0, 1).all()

    # Excluded rows kept on request; corrections in their own column without a label column.
    kept = client.export_cleanset(job.output, keep_excluded=True, include_quality_columns=False)
    assert len(kept) == 150
    assert kept.loc[exclude_row, "action"] == "exclude"
    assert kept.loc[relabel_row, "corrected_label"] == new_label
    assert kept.loc[relabel_row, "label"] == df.loc[relabel_row, "label"]

    # Without corrections: the dataset as uploaded.
    raw = client.export_cleanset(job.output, apply_corrections=False, include_quality_columns=False)
    pd.testing.assert_frame_equal(raw, df, check_dtype=False)

    # As a CSV file.
    exported = client.export(job.output, format="csv")
    assert exported.content_type == "text/csv"
    assert exported.filename.endswith(".csv")
    assert exported.content.decode().splitlines()[0].startswith("row_id,f0,f1,f2,f3,label")

    # Clearing a correction brings the row back.
    assert client.set_corrections(
        job.output, pd.DataFrame({"row_index": [exclude_row], "action": ["clear"]})
    ) == 1
    assert len(client.export_cleanset(job.output)) == 150


def test_another_tenants_key_gets_not_found(mesh, analysed):
    _, _, job = analysed
    intruder = mesh.tenant("beta")
    for call in (
        lambda: intruder.get_report(job.output),
        lambda: intruder.issues(job.output, issue="label"),
        lambda: intruder.export_cleanset(job.output),
        lambda: intruder.set_corrections(job.output, exclude=[0]),
    ):
        with pytest.raises(trustmesh.TrustmeshError) as refused:
            call()
        assert refused.value.code == grpc.StatusCode.NOT_FOUND


def test_a_bad_key_is_unauthenticated_and_bad_input_is_invalid_argument(mesh, analysed):
    client, _, job = analysed
    stranger = trustmesh.Client(mesh.endpoint, "tmk_nope_nope", tenant="acme")
    with pytest.raises(trustmesh.TrustmeshError) as refused:
        stranger.get_report(job.output)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(trustmesh.TrustmeshError) as invalid:
        client.export(job.output, format="parquet")
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError):
        trustmesh.issue_type("no_such_issue")
    # Plaintext only to loopback unless asked for with http://.
    with pytest.raises(ValueError):
        trustmesh.Client("example.com:50051", "k")
