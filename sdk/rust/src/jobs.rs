//! Jobs: starting an analysis, and following, listing and cancelling jobs.

use std::pin::Pin;

use futures::future::Either;
use futures::{Stream, StreamExt as _};
use tonic::{Code, Streaming};
use trustmesh_proto::v1::{
    CancelJobRequest, GetJobRequest, Job, JobState, ListJobsRequest, StartAnalysisRequest,
    TaskType, WatchJobRequest,
};

use crate::client::{Client, Idempotence, request_id};
use crate::error::Error;
use crate::paging::{PAGE_SIZE, pages};

/// Whether a job in `state` will not change any more.
#[must_use]
pub fn is_final(state: JobState) -> bool {
    match state {
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => true,
        JobState::Unspecified | JobState::Queued | JobState::Running => false,
    }
}

/// A started analysis: its job, and ways to follow it.
#[derive(Debug, Clone)]
pub struct Analysis {
    client: Client,
    job: Job,
}

impl Analysis {
    /// The job as StartAnalysis answered it.
    #[must_use]
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The job's resource name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.job.name
    }

    /// Every update of the job until it ends (the last item is SUCCEEDED, FAILED or CANCELLED).
    pub fn watch(&self) -> impl Stream<Item = Result<Job, Error>> + Send + 'static {
        self.client.watch_job(&self.job.name)
    }

    /// Waits until the job ends; returns its last state (which may be FAILED or CANCELLED).
    ///
    /// # Errors
    ///
    /// The watch failed, or ended before the job did.
    pub async fn wait(&self) -> Result<Job, Error> {
        self.client.wait_job(&self.job.name, |_| {}).await
    }

    /// Asks the service to cancel the job.
    ///
    /// # Errors
    ///
    /// The service's refusal (e.g. FAILED_PRECONDITION for a job that already ended).
    pub async fn cancel(&self) -> Result<Job, Error> {
        self.client.cancel_job(&self.job.name).await
    }
}

impl Client {
    /// Starts an analysis of `request.dataset` (a resource name or bare id); a `request_id` is
    /// set when empty, so the start is retried safely.
    ///
    /// # Errors
    ///
    /// The service's refusal, e.g. [`Error::Invalid`] for an unknown label column.
    pub async fn start_analysis(
        &self,
        mut request: StartAnalysisRequest,
    ) -> Result<Analysis, Error> {
        request.dataset = self.resource("datasets", &request.dataset)?;
        if request.request_id.is_empty() {
            request.request_id = request_id();
        }
        let job = self
            .call(Idempotence::Safe, || {
                let mut service = self.analysis();
                let request = request.clone();
                async move { service.start_analysis(request).await }
            })
            .await?;
        Ok(Analysis {
            client: self.clone(),
            job,
        })
    }

    /// Starts a classification analysis of `dataset` with `label_column` as the label.
    ///
    /// # Errors
    ///
    /// As [`Client::start_analysis`].
    pub async fn analyze(&self, dataset: &str, label_column: &str) -> Result<Analysis, Error> {
        self.start_analysis(StartAnalysisRequest {
            dataset: dataset.to_owned(),
            label_column: label_column.to_owned(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
    }

    /// A handle on job `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn analysis_of(&self, name: &str) -> Result<Analysis, Error> {
        Ok(Analysis {
            job: self.get_job(name).await?,
            client: self.clone(),
        })
    }

    /// Job `name` (a resource name or a bare id in this client's tenant).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn get_job(&self, name: &str) -> Result<Job, Error> {
        let name = self.resource("jobs", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.analysis();
            let name = name.clone();
            async move { service.get_job(GetJobRequest { name }).await }
        })
        .await
    }

    /// Asks the service to cancel job `name`.
    ///
    /// # Errors
    ///
    /// The service's refusal (e.g. FAILED_PRECONDITION for a job that already ended).
    pub async fn cancel_job(&self, name: &str) -> Result<Job, Error> {
        let name = self.resource("jobs", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.analysis();
            let name = name.clone();
            async move { service.cancel_job(CancelJobRequest { name }).await }
        })
        .await
    }

    /// Every job of this client's tenant (of `dataset` only, when given), page by page.
    pub fn list_jobs<'a>(
        &'a self,
        dataset: Option<&'a str>,
    ) -> impl Stream<Item = Result<Job, Error>> + Send + 'a {
        pages(move |page_token| async move {
            let parent = self.parent()?;
            let dataset = dataset
                .map(|d| self.resource("datasets", d))
                .transpose()?
                .unwrap_or_default();
            let page = self
                .call(Idempotence::Safe, || {
                    let mut service = self.analysis();
                    let request = ListJobsRequest {
                        parent: parent.clone(),
                        page_size: PAGE_SIZE,
                        page_token: page_token.clone(),
                        dataset: dataset.clone(),
                        ..ListJobsRequest::default()
                    };
                    async move { service.list_jobs(request).await }
                })
                .await?;
            Ok((page.jobs, page.next_page_token))
        })
    }

    /// Every update of job `name` until it ends; a watch broken by UNAVAILABLE (e.g. a
    /// restarting server) is opened again with the client's backoff.
    pub fn watch_job(&self, name: &str) -> impl Stream<Item = Result<Job, Error>> + Send + 'static {
        match self.resource("jobs", name) {
            Ok(name) => {
                let state = Watch {
                    client: self.clone(),
                    name,
                    updates: None,
                    reopens: backon::BackoffBuilder::build(self.retry_policy().backoff()),
                    done: false,
                };
                Either::Left(futures::stream::unfold(state, Watch::next))
            }
            Err(error) => Either::Right(futures::stream::once(async move { Err(error) })),
        }
    }

    /// Follows job `name` until it ends, calling `progress` with each update; returns the last.
    ///
    /// # Errors
    ///
    /// The watch failed, or the stream ended before the job did.
    pub async fn wait_job(&self, name: &str, mut progress: impl FnMut(&Job)) -> Result<Job, Error> {
        let mut updates = std::pin::pin!(self.watch_job(name));
        while let Some(job) = updates.next().await {
            let job = job?;
            progress(&job);
            if is_final(job.state()) {
                return Ok(job);
            }
        }
        Err(Error::Server {
            code: Code::Unavailable,
            message: format!("the watch of {name} ended before the job did"),
        })
    }
}

/// The state of a [`Client::watch_job`] stream.
struct Watch {
    client: Client,
    name: String,
    updates: Option<Pin<Box<Streaming<Job>>>>,
    reopens: backon::ExponentialBackoff,
    done: bool,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<Job, Error>, Self)> {
        loop {
            if self.done {
                return None;
            }
            let name = self.name.clone();
            let updates = match &mut self.updates {
                Some(updates) => updates,
                None => {
                    let opened = self
                        .client
                        .call(Idempotence::Safe, || {
                            let mut service = self.client.analysis();
                            let name = name.clone();
                            async move { service.watch_job(WatchJobRequest { name }).await }
                        })
                        .await;
                    match opened {
                        Ok(updates) => self.updates.insert(Box::pin(updates)),
                        Err(error) => {
                            self.done = true;
                            return Some((Err(error), self));
                        }
                    }
                }
            };
            match updates.message().await {
                Ok(Some(job)) => {
                    self.done = is_final(job.state());
                    return Some((Ok(job), self));
                }
                // The server closed the watch without a final state: nothing more will come.
                Ok(None) => return None,
                Err(status) if status.code() == Code::Unavailable => {
                    let Some(delay) = self.reopens.next() else {
                        self.done = true;
                        return Some((Err(Error::from(status)), self));
                    };
                    self.updates = None;
                    tokio::time::sleep(delay).await;
                }
                Err(status) => {
                    self.done = true;
                    return Some((Err(Error::from(status)), self));
                }
            }
        }
    }
}
