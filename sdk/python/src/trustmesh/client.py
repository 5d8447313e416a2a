"""The trustmesh client: one gRPC channel to a mesh endpoint, an API key on every call.

Names follow the Rust SDK (`sdk/rust`): `Client`, `upload_dataframe`, `analyze(...).wait()`,
`get_report`, `list_rows`, `issues`, `set_corrections`, `export_cleanset`. Resources are given as
full names (`tenants/{tenant}/reports/{id}`) or, with `tenant=` set, as bare ids.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union
from urllib.parse import urlparse

import grpc
import pandas as pd
from google.protobuf import timestamp_pb2

from trustmesh.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
    tenancy_pb2,
    tenancy_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
)

#: Bytes per upload message (the service takes at most 4 MiB).
UPLOAD_CHUNK_BYTES = 1 << 20
#: Rows rendered to CSV at a time while uploading a DataFrame.
UPLOAD_ROWS_PER_SLICE = 50_000
#: Corrections sent per `SetCorrections` call (the service's maximum).
CORRECTIONS_PER_CALL = 10_000

# Retries of UNAVAILABLE with jittered exponential backoff, done by gRPC itself.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": f"trustmesh.v1.{service}"}
                    for service in (
                        "DatasetService",
                        "AnalysisService",
                        "TrustService",
                        "TenancyService",
                        "DeletionService",
                        "AuditService",
                    )
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class TrustmeshError(Exception):
    """A call the service refused or that failed; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def of(cls, error: grpc.RpcError) -> "TrustmeshError":
        return cls(error.code(), error.details() or "")


class JobFailed(TrustmeshError):
    """A job ended FAILED or CANCELLED; `job` is its last state."""

    def __init__(self, job: common_pb2.Job):
        state = common_pb2.JobState.Name(job.state)
        detail = f"{job.error.code}: {job.error.message}" if job.error.code else state
        super().__init__(grpc.StatusCode.ABORTED, f"job {job.name} ended {state} ({detail})")
        self.job = job


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except grpc.RpcError as error:
        raise TrustmeshError.of(error) from None


_ISSUE_PREFIX = "ISSUE_TYPE_"


def issue_type(issue: Union[str, int]) -> int:
    """`"label"`, `"near_duplicate"`, `"ISSUE_TYPE_LABEL"` or an `IssueType` value → the value."""
    if isinstance(issue, int):
        return issue
    name = issue.upper()
    if not name.startswith(_ISSUE_PREFIX):
        name = _ISSUE_PREFIX + name
    try:
        return common_pb2.IssueType.Value(name)
    except ValueError:
        raise ValueError(f"unknown issue type {issue!r}") from None


def issue_name(value: int) -> str:
    """An `IssueType` value → its short name, e.g. `label`."""
    return common_pb2.IssueType.Name(value)[len(_ISSUE_PREFIX) :].lower()


_TASKS = {
    "classification": common_pb2.TASK_TYPE_CLASSIFICATION,
    "multilabel": common_pb2.TASK_TYPE_MULTILABEL,
    "regression": common_pb2.TASK_TYPE_REGRESSION,
    "unsupervised": common_pb2.TASK_TYPE_UNSUPERVISED,
}

_ACTIONS = {
    "": trust_pb2.CORRECTION_ACTION_UNSPECIFIED,
    "clear": trust_pb2.CORRECTION_ACTION_UNSPECIFIED,
    "keep": trust_pb2.CORRECTION_ACTION_KEEP,
    "relabel": trust_pb2.CORRECTION_ACTION_RELABEL,
    "exclude": trust_pb2.CORRECTION_ACTION_EXCLUDE,
    "needs_review": trust_pb2.CORRECTION_ACTION_NEEDS_REVIEW,
}
_ACTION_NAMES = {value: name for name, value in _ACTIONS.items() if name != "clear"}

_FINAL = {
    common_pb2.JOB_STATE_SUCCEEDED,
    common_pb2.JOB_STATE_FAILED,
    common_pb2.JOB_STATE_CANCELLED,
}


class Analysis:
    """A running or finished analysis job: `wait()` for it, `watch()` its progress, `report`."""

    def __init__(self, client: "Client", job: common_pb2.Job):
        self._client = client
        self.job = job

    @property
    def name(self) -> str:
        """`tenants/{tenant}/jobs/{job}`."""
        return self.job.name

    @property
    def report(self) -> str:
        """The report's name once the job SUCCEEDED (else empty)."""
        return self.job.output

    def watch(self) -> Iterator[common_pb2.Job]:
        """The job's updates until it ends (the service streams them)."""
        stub = analysis_pb2_grpc.AnalysisServiceStub(self._client._channel)
        try:
            for job in stub.WatchJob(
                analysis_pb2.WatchJobRequest(name=self.name), metadata=self._client._metadata
            ):
                self.job = job
                yield job
        except grpc.RpcError as error:
            raise TrustmeshError.of(error) from None

    def wait(
        self,
        timeout: Optional[float] = None,
        progress: Optional[Callable[[common_pb2.Job], None]] = None,
    ) -> common_pb2.Job:
        """Waits for the job to end; returns it once SUCCEEDED.

        Raises `JobFailed` if it ended FAILED or CANCELLED, `TimeoutError` after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.job.state not in _FINAL:
            try:
                for job in self.watch():
                    if progress is not None:
                        progress(job)
                    if job.state in _FINAL or (deadline and time.monotonic() > deadline):
                        break
            except TrustmeshError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
            if self.job.state not in _FINAL:
                if deadline and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.name} did not end within {timeout} s")
                time.sleep(0.5)
                self.job = self._client.get_job(self.name)
        if self.job.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise JobFailed(self.job)
        return self.job

    def cancel(self) -> common_pb2.Job:
        """Asks the service to cancel the job."""
        stub = analysis_pb2_grpc.AnalysisServiceStub(self._client._channel)
        self.job = _call(
            stub.CancelJob,
            analysis_pb2.CancelJobRequest(name=self.name),
            metadata=self._client._metadata,
        )
        return self.job


@dataclass(frozen=True)
class Exported:
    """What an export streamed: media type, suggested file name, content."""

    content_type: str
    filename: str
    content: bytes


def _channel(endpoint: str, root_certificates: Optional[bytes]) -> grpc.Channel:
    options = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", 16 << 20),
    ]
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    target = parsed.netloc or parsed.path
    if parsed.scheme == "https":
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(target, credentials, options=options)
    host = parsed.hostname or ""
    if parsed.scheme == "http" or host in ("localhost", "127.0.0.1", "::1"):
        return grpc.insecure_channel(target, options=options)
    raise ValueError(
        f"endpoint {endpoint!r}: use https://host:port (plaintext http:// is for loopback dev meshes)"
    )


class Client:
    """A trustmesh client over one endpoint (the standalone mesh, or an ingress routing by service).

    `api_key` is sent as `authorization: Bearer <api_key>` on every call. `tenant` (the key's
    tenant) lets calls take bare ids and names the parent of new datasets.
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        tenant: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
    ):
        self.endpoint = endpoint
        self.tenant = tenant
        self._root_certificates = root_certificates
        self._channel = _channel(endpoint, root_certificates)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(self._channel)
        self.analysis = analysis_pb2_grpc.AnalysisServiceStub(self._channel)
        self.trust = trust_pb2_grpc.TrustServiceStub(self._channel)
        self.tenancy = tenancy_pb2_grpc.TenancyServiceStub(self._channel)

    def __repr__(self) -> str:
        # Never the key.
        return f"Client(endpoint={self.endpoint!r}, tenant={self.tenant!r})"

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- names -------------------------------------------------------------------------------

    def parent(self) -> str:
        """`tenants/{tenant}` of this client."""
        if not self.tenant:
            raise ValueError("no tenant: pass Client(..., tenant=...)")
        return f"tenants/{self.tenant}"

    def resource(self, collection: str, name: str) -> str:
        """`name` if it is a full resource name, else `tenants/{tenant}/{collection}/{name}`."""
        if not name:
            raise ValueError(f"an empty {collection} name")
        if name.startswith("tenants/"):
            return name
        return f"{self.parent()}/{collection}/{name}"

    def _unary(self, method: Callable[..., Any], request: Any) -> Any:
        return _call(method, request, metadata=self._metadata)

    # --- tenants and keys (operator credential) ---------------------------------------------

    def create_tenant_with_key(
        self,
        tenant: str,
        display_name: str,
        scopes: Sequence[str] = ("admin",),
        lifetime: timedelta = timedelta(days=30),
    ) -> tuple:
        """Creates `tenant` and an API key of it (this client must hold the operator credential).

        Returns `(key_name, secret)`; the secret is shown only here.
        """
        self._unary(
            self.tenancy.CreateTenant,
            tenancy_pb2.CreateTenantRequest(tenant_id=tenant, display_name=display_name),
        )
        expire = timestamp_pb2.Timestamp()
        expire.FromDatetime(datetime.now(timezone.utc) + lifetime)
        response = self._unary(
            self.tenancy.CreateApiKey,
            tenancy_pb2.CreateApiKeyRequest(
                parent=f"tenants/{tenant}",
                display_name=display_name,
                scopes=[tenancy_pb2.Scope.Value("SCOPE_" + s.replace(":", "_").upper()) for s in scopes],
                expire_time=expire,
                request_id=str(uuid.uuid4()),
            ),
        )
        return response.api_key.name, response.secret

    # --- datasets ----------------------------------------------------------------------------

    def get_dataset(self, name: str) -> dataset_pb2.Dataset:
        """Dataset `name`."""
        request = dataset_pb2.GetDatasetRequest(name=self.resource("datasets", name))
        return self._unary(self.datasets.GetDataset, request)

    def upload_dataframe(
        self,
        df: pd.DataFrame,
        name: str,
        *,
        id_column: Optional[str] = None,
        wait: bool = True,
        timeout: float = 600.0,
    ) -> dataset_pb2.Dataset:
        """Uploads `df` (without its index) as a new CSV dataset called `name`.

        The frame is rendered and sent in slices, so memory stays bounded by a slice. With `wait`
        (the default), returns once the dataset is READY and raises `TrustmeshError` if ingest
        rejected it.
        """
        dataset = self._unary(
            self.datasets.CreateDataset,
            dataset_pb2.CreateDatasetRequest(
                parent=self.parent(), display_name=name, request_id=str(uuid.uuid4())
            ),
        )

        def messages() -> Iterator[dataset_pb2.UploadDatasetRequest]:
            yield dataset_pb2.UploadDatasetRequest(
                metadata=dataset_pb2.UploadMetadata(
                    dataset=dataset.name,
                    format=dataset_pb2.DATASET_FORMAT_CSV,
                    filename=f"{_file_stem(name)}.csv",
                    id_column=id_column or "",
                )
            )
            buffer = bytearray()
            for start in range(0, max(len(df), 1), UPLOAD_ROWS_PER_SLICE):
                part = df.iloc[start : start + UPLOAD_ROWS_PER_SLICE]
                buffer += part.to_csv(index=False, header=start == 0).encode("utf-8")
                while len(buffer) >= UPLOAD_CHUNK_BYTES:
                    yield dataset_pb2.UploadDatasetRequest(chunk=bytes(buffer[:UPLOAD_CHUNK_BYTES]))
                    del buffer[:UPLOAD_CHUNK_BYTES]
            if buffer:
                yield dataset_pb2.UploadDatasetRequest(chunk=bytes(buffer))

        uploaded = _call(self.datasets.UploadDataset, messages(), metadata=self._metadata)
        if not wait:
            return uploaded
        return self.wait_dataset(uploaded.name, timeout=timeout)

    def wait_dataset(self, name: str, timeout: float = 600.0) -> dataset_pb2.Dataset:
        """Polls dataset `name` until it is READY; raises `TrustmeshError` if it FAILED."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            dataset = self.get_dataset(name)
            if dataset.state == dataset_pb2.DATASET_STATE_READY:
                return dataset
            if dataset.state == dataset_pb2.DATASET_STATE_FAILED:
                raise TrustmeshError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"dataset {name} was rejected: {dataset.error.code} {dataset.error.message}",
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {name} was not READY within {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # --- analyses ----------------------------------------------------------------------------

    def analyze(
        self,
        dataset: str,
        label: Optional[str] = None,
        *,
        task: str = "classification",
        issue_types: Iterable[Union[str, int]] = (),
    ) -> Analysis:
        """Starts an analysis of `dataset` with `label` as the label column; `.wait()` on it."""
        request = analysis_pb2.StartAnalysisRequest(
            dataset=self.resource("datasets", dataset),
            label_column=label or "",
            task_type=_TASKS[task],
            issue_types=[issue_type(i) for i in issue_types],
            request_id=str(uuid.uuid4()),
        )
        return Analysis(self, self._unary(self.analysis.StartAnalysis, request))

    def get_job(self, name: str) -> common_pb2.Job:
        """Job `name`."""
        request = analysis_pb2.GetJobRequest(name=self.resource("jobs", name))
        return self._unary(self.analysis.GetJob, request)

    # --- reports -----------------------------------------------------------------------------

    def get_report(self, report: str) -> trust_pb2.Report:
        """Report `report`: health, per-issue summary, model metrics, class health."""
        request = trust_pb2.GetReportRequest(name=self.resource("reports", report))
        return self._unary(self.trust.GetReport, request)

    def list_rows(
        self,
        report: str,
        issue_types: Iterable[Union[str, int]] = (),
        *,
        order_by: int = trust_pb2.ROW_ORDER_TRUST_SCORE_ASCENDING,
        page_size: int = 1000,
    ) -> Iterator[trust_pb2.RowResult]:
        """The rows of `report` flagged with one of `issue_types` (all rows if empty), paged."""
        token = ""
        while True:
            page = self._unary(
                self.trust.ListRows,
                trust_pb2.ListRowsRequest(
                    parent=self.resource("reports", report),
                    issue_types=[issue_type(i) for i in issue_types],
                    order_by=order_by,
                    page_size=page_size,
                    page_token=token,
                ),
            )
            yield from page.rows
            token = page.next_page_token
            if not token:
                return

    def issues(
        self,
        report: str,
        issue: Union[str, int, Sequence[Union[str, int]], None] = None,
        *,
        limit: Optional[int] = None,
    ) -> pd.DataFrame:
        """The rows flagged with `issue` (e.g. `"label"`; default: any issue the report found),
        least trustworthy first, as a DataFrame with one `is_<issue>` / `<issue>_quality` pair per
        issue type and the row's correction."""
        if issue is None:
            summaries = self.get_report(report).issue_summaries
            wanted = [s.issue_type for s in summaries if s.flagged_rows > 0]
            if not wanted:
                return _rows_frame([])
        elif isinstance(issue, (str, int)):
            wanted = [issue_type(issue)]
        else:
            wanted = [issue_type(i) for i in issue]
        rows = []
        for row in self.list_rows(report, wanted):
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
        return _rows_frame(rows)

    def set_corrections(
        self,
        report: str,
        corrections: Union[pd.DataFrame, Iterable[Mapping[str, Any]], None] = None,
        *,
        relabel: Optional[Mapping[int, str]] = None,
        exclude: Iterable[int] = (),
        keep: Iterable[int] = (),
        needs_review: Iterable[int] = (),
        clear: Iterable[int] = (),
    ) -> int:
        """Records corrections on rows of `report`; returns how many were recorded.

        Either `corrections` (a DataFrame or records with `row_index`, `action` — `relabel`,
        `exclude`, `keep`, `needs_review` or `clear` — and `corrected_label` for relabels), or
        the keyword forms: `relabel={row: label}`, `exclude=[rows]`, ...
        """
        items: list = []
        if corrections is not None:
            records = (
                corrections.to_dict("records")
                if isinstance(corrections, pd.DataFrame)
                else list(corrections)
            )
            for record in records:
                label = record.get("corrected_label")
                items.append(
                    trust_pb2.Correction(
                        row_index=int(record["row_index"]),
                        action=_ACTIONS[str(record["action"]).lower()],
                        corrected_label="" if label is None or pd.isna(label) else str(label),
                    )
                )
        for row, label in (relabel or {}).items():
            items.append(
                trust_pb2.Correction(
                    row_index=int(row),
                    action=trust_pb2.CORRECTION_ACTION_RELABEL,
                    corrected_label=str(label),
                )
            )
        for rows, action in (
            (exclude, "exclude"),
            (keep, "keep"),
            (needs_review, "needs_review"),
            (clear, "clear"),
        ):
            items += [trust_pb2.Correction(row_index=int(r), action=_ACTIONS[action]) for r in rows]
        updated = 0
        for start in range(0, len(items), CORRECTIONS_PER_CALL):
            response = self._unary(
                self.trust.SetCorrections,
                trust_pb2.SetCorrectionsRequest(
                    parent=self.resource("reports", report),
                    corrections=items[start : start + CORRECTIONS_PER_CALL],
                    request_id=str(uuid.uuid4()),
                ),
            )
            updated += response.updated_count
        return updated

    def export(
        self,
        report: str,
        *,
        format: str = "csv",
        apply_corrections: bool = True,
        keep_excluded: bool = False,
        include_quality_columns: bool = True,
        label_column: Optional[str] = None,
    ) -> Exported:
        """The cleanset of `report` as a file (`format` `csv` or `jsonl`)."""
        request = trust_pb2.ExportCleansetRequest(
            name=self.resource("reports", report),
            format=trust_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{format.upper()}"),
            apply_corrections=apply_corrections,
            keep_excluded=keep_excluded,
            include_quality_columns=include_quality_columns,
            label_column=label_column or "",
        )
        content_type = filename = ""
        content = bytearray()
        try:
            for message in self.trust.ExportCleanset(request, metadata=self._metadata):
                content_type = content_type or message.content_type
                filename = filename or message.filename
                content += message.chunk
        except grpc.RpcError as error:
            raise TrustmeshError.of(error) from None
        return Exported(content_type, filename, bytes(content))

    def export_cleanset(
        self,
        report: str,
        *,
        apply_corrections: bool = True,
        keep_excluded: bool = False,
        include_quality_columns: bool = True,
        label_column: Optional[str] = None,
    ) -> pd.DataFrame:
        """The cleanset of `report` as a DataFrame: the dataset's columns (with `apply_corrections`,
        relabels applied — in `label_column` if given, else in a `corrected_label` column — and
        excluded rows dropped unless `keep_excluded`, plus an `action` column), then the quality
        columns (`row_index`, `trust_score`, `given_label`, `suggested_label`, `is_<issue>`, ...)."""
        exported = self.export(
            report,
            format="jsonl",
            apply_corrections=apply_corrections,
            keep_excluded=keep_excluded,
            include_quality_columns=include_quality_columns,
            label_column=label_column,
        )
        text = exported.content.decode("utf-8")
        records = [json.loads(line) for line in io.StringIO(text) if line.strip()]
        columns = list(records[0]) if records else None
        return pd.DataFrame.from_records(records, columns=columns)


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-")
    return stem or "dataset"


def _rows_frame(rows: Sequence[trust_pb2.RowResult]) -> pd.DataFrame:
    """Row results as a DataFrame, one column per field and per issue type."""
    records = []
    for row in rows:
        record = {
            "row_index": row.row_index,
            "row_id": row.row_id,
            "trust_score": row.trust_score,
            "given_label": row.given_label,
            "suggested_label": row.suggested_label,
            "suggested_label_confidence": row.suggested_label_confidence,
            "near_duplicate_cluster_id": row.near_duplicate_cluster_id,
        }
        for issue in row.issues:
            name = issue_name(issue.issue_type)
            record[f"is_{name}"] = issue.flagged
            record[f"{name}_quality"] = issue.quality_score
        has = row.HasField("correction")
        record["action"] = _ACTION_NAMES.get(row.correction.action, "") if has else ""
        record["corrected_label"] = row.correction.corrected_label if has else ""
        records.append(record)
    columns = [
        "row_index",
        "row_id",
        "trust_score",
        "given_label",
        "suggested_label",
        "suggested_label_confidence",
        "near_duplicate_cluster_id",
    ]
    return pd.DataFrame.from_records(records, columns=None if records else columns)
