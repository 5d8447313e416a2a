//! [`IngestClient`]: ingest's `DatasetService` as analysis calls it, with the mesh's service
//! credential on every request (ingest audits those reads as actor SERVICE, in the tenant's log).
//! Shared by the `AnalysisService` handler (StartAnalysis checks the dataset) and the worker (reads
//! the dataset's rows).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::{Dataset, GetDatasetRequest, ReadRowsRequest, ReadRowsResponse};
use trustmesh_service_kit::calls::mesh_request;

/// Ingest's `DatasetService`, called with the configured credential.
#[derive(Debug, Clone)]
pub(crate) struct IngestClient {
    datasets: DatasetServiceClient<Channel>,
    /// `Bearer <mesh.service_credential>`, if configured.
    bearer: Option<MetadataValue<Ascii>>,
}

impl IngestClient {
    /// A client on `channel` presenting `bearer` (the whole `authorization` value), if set.
    pub(crate) fn new(channel: Channel, bearer: Option<MetadataValue<Ascii>>) -> Self {
        Self {
            datasets: DatasetServiceClient::new(channel),
            bearer,
        }
    }

    /// `message` as a request to ingest, with the configured credential.
    fn request<T>(&self, message: T) -> Request<T> {
        mesh_request(message, self.bearer.as_ref())
    }

    /// `GetDataset` of `name` (`tenants/{tenant}/datasets/{id}`).
    pub(crate) async fn get_dataset(&self, name: &str) -> Result<Dataset, Status> {
        let request = self.request(GetDatasetRequest {
            name: name.to_owned(),
        });
        Ok(self
            .datasets
            .clone()
            .get_dataset(request)
            .await?
            .into_inner())
    }

    /// `ReadRows` of `request`: the stream of row batches.
    pub(crate) async fn read_rows(
        &self,
        request: ReadRowsRequest,
    ) -> Result<Streaming<ReadRowsResponse>, Status> {
        let request = self.request(request);
        Ok(self.datasets.clone().read_rows(request).await?.into_inner())
    }
}
