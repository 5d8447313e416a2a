//! An upload in flight, in bounded memory: [`UploadSink`] hands each received chunk to the object
//! store (the raw upload, sealed piece by piece as it arrives, a multipart upload on S3) and to the
//! parser (on a blocking thread, reading it front to back through a [`PieceReader`]); neither holds
//! the whole upload (but the formats read at random, Parquet and zip archives, which
//! [`PieceReader::into_bytes`] gathers). [`put_rows`] stores the parsed columns one at a time.
//!
//! Nothing is recorded unless the whole upload is valid: the raw object's stream ends (and the
//! object is recorded) only after the parser accepted the upload; an upload that fails or is
//! abandoned before ends the stream with an error, so the store discards what it received.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use trustmesh_proto::v1::ColumnData;
use trustmesh_store::{EncryptedError, EncryptedObjects, ObjectInfo, ObjectKey, TenantScope};

use super::csv::Rejection;
use super::schema::Inferred;
use crate::error::IngestError;

/// Chunks (of at most 4 MiB) in flight to the store and to the parser, each.
const IN_FLIGHT: usize = 4;

/// A piece of the upload, or `None` for its end. A channel closed without `None` means the upload
/// was abandoned.
type Piece = Option<Bytes>;

fn abandoned() -> io::Error {
    io::Error::other("the upload was abandoned before its end")
}

/// The parser's side of an upload: the chunks as one `Read`, blocking until the next arrives.
#[derive(Debug)]
pub(crate) struct PieceReader {
    pieces: mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

impl PieceReader {
    /// The next non-empty piece, or `None` at the end.
    fn next_piece(&mut self) -> io::Result<Option<Bytes>> {
        while !self.ended {
            match self.pieces.blocking_recv() {
                Some(Some(piece)) if piece.is_empty() => {}
                Some(Some(piece)) => return Ok(Some(piece)),
                Some(None) => self.ended = true,
                None => return Err(abandoned()),
            }
        }
        Ok(None)
    }

    /// The whole upload in one buffer, for the formats read at random (Parquet, zip).
    pub(crate) fn into_bytes(mut self) -> Result<Bytes, Rejection> {
        let mut pieces = vec![std::mem::take(&mut self.current)];
        pieces.retain(|piece| !piece.is_empty());
        while let Some(piece) = self.next_piece().map_err(super::csv::unreadable)? {
            pieces.push(piece);
        }
        if let [only] = pieces.as_slice() {
            return Ok(only.clone());
        }
        let mut whole = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
        for piece in pieces {
            whole.extend_from_slice(&piece);
        }
        Ok(whole.freeze())
    }
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            match self.next_piece()? {
                Some(piece) => self.current = piece,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// The pieces of a channel as an object body; a channel closed before its end is an error.
fn body(pieces: mpsc::Receiver<Piece>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Some(pieces), |pieces| async move {
        let mut pieces = pieces?;
        match pieces.recv().await {
            Some(Some(piece)) => Some((Ok(piece), Some(pieces))),
            Some(None) => None,
            None => Some((Err(abandoned()), None)),
        }
    })
}

/// An upload being stored and parsed as it arrives.
#[derive(Debug)]
pub(crate) struct UploadSink {
    raw: mpsc::Sender<Piece>,
    /// The raw object's put, until awaited.
    stored: Option<JoinHandle<Result<ObjectInfo, EncryptedError>>>,
    parser: mpsc::Sender<Piece>,
    /// The parser, until awaited.
    parsed: Option<JoinHandle<Result<Inferred, Rejection>>>,
    rejected: fn(Rejection) -> IngestError,
    received: u64,
}

impl UploadSink {
    /// Starts storing the upload as the tenant's `key` and parsing it with `parse` (on a blocking
    /// thread); `rejected` turns the parser's rejection into the call's error.
    pub(crate) fn start<F>(
        objects: &EncryptedObjects,
        scope: &TenantScope,
        key: ObjectKey,
        rejected: fn(Rejection) -> IngestError,
        parse: F,
    ) -> Self
    where
        F: FnOnce(PieceReader) -> Result<Inferred, Rejection> + Send + 'static,
    {
        let (raw, raw_pieces) = mpsc::channel(IN_FLIGHT);
        let (objects, scope) = (objects.clone(), scope.clone());
        let stored = tokio::spawn(async move {
            objects
                .put_stream(&scope, &key, "upload", body(raw_pieces))
                .await
        });
        let (parser, pieces) = mpsc::channel(IN_FLIGHT);
        let reader = PieceReader {
            pieces,
            current: Bytes::new(),
            ended: false,
        };
        let parsed = tokio::task::spawn_blocking(move || parse(reader));
        Self {
            raw,
            stored: Some(stored),
            parser,
            parsed: Some(parsed),
            rejected,
            received: 0,
        }
    }

    /// Bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Hands `chunk` to the store and the parser.
    ///
    /// # Errors
    /// The parser's rejection if it already refused the upload (it stops reading at the first
    /// problem); the store's error if storing failed. Then [`UploadSink::abort`].
    pub(crate) async fn push(&mut self, chunk: Bytes) -> Result<(), IngestError> {
        self.received += chunk.len() as u64;
        if self.parser.send(Some(chunk.clone())).await.is_err() {
            return Err(match self.parsed().await {
                Err(error) => error,
                Ok(_) => IngestError::Corrupt("the parser stopped before the end of the upload"),
            });
        }
        if self.raw.send(Some(chunk)).await.is_err() {
            return Err(self.store_stopped().await);
        }
        Ok(())
    }

    /// Ends the upload: waits for the parser and, if it accepted the upload, completes the raw
    /// object. Returns what the parser found and the raw object's metadata.
    ///
    /// # Errors
    /// The parser's rejection (then nothing is stored) or the store's error.
    pub(crate) async fn finish(mut self) -> Result<(Inferred, ObjectInfo), IngestError> {
        // A parser that stopped early has its answer ready.
        let _ = self.parser.send(None).await;
        let inferred = match self.parsed().await {
            Ok(inferred) => inferred,
            Err(error) => {
                self.abort().await;
                return Err(error);
            }
        };
        if self.raw.send(None).await.is_err() {
            return Err(self.store_stopped().await);
        }
        match self.stored.take() {
            Some(stored) => Ok((inferred, stored.await??)),
            None => Err(IngestError::Corrupt(
                "the raw upload's put was awaited twice",
            )),
        }
    }

    /// Abandons the upload: the store discards what it received (the put fails, nothing is
    /// recorded) and the parser stops; returns once the store has cleaned up.
    pub(crate) async fn abort(self) {
        let Self { raw, stored, .. } = self;
        drop(raw);
        if let Some(stored) = stored {
            let _ = stored.await;
        }
    }

    async fn parsed(&mut self) -> Result<Inferred, IngestError> {
        match self.parsed.take() {
            Some(parsed) => parsed.await?.map_err(self.rejected),
            None => Err(IngestError::Corrupt("the parser was awaited twice")),
        }
    }

    async fn store_stopped(&mut self) -> IngestError {
        match self.stored.take() {
            Some(stored) => match stored.await {
                Ok(Err(error)) => error.into(),
                Ok(Ok(_)) => IngestError::Corrupt("the raw upload was stored before its end"),
                Err(join) => join.into(),
            },
            None => IngestError::Corrupt("the raw upload's put was awaited twice"),
        }
    }
}

/// Stores `columns` as the tenant's `key`, the encrypted `StoredRows` of `row_count` rows: encoded,
/// sealed and sent one column at a time, each dropped once encoded (the bytes are exactly those
/// of `StoredRows::encode_to_vec`).
pub(crate) async fn put_rows(
    objects: &EncryptedObjects,
    scope: &TenantScope,
    key: &ObjectKey,
    row_count: u64,
    columns: Vec<ColumnData>,
) -> Result<ObjectInfo, EncryptedError> {
    let mut head = Vec::new();
    if row_count != 0 {
        prost::encoding::uint64::encode(1, &row_count, &mut head);
    }
    let columns = columns.into_iter().map(|column| {
        let mut piece = Vec::new();
        prost::encoding::message::encode(2, &column, &mut piece);
        Ok::<_, io::Error>(Bytes::from(piece))
    });
    let body = futures::stream::iter(std::iter::once(Ok(Bytes::from(head))).chain(columns));
    objects.put_stream(scope, key, "rows", body).await
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use trustmesh_proto::v1::column_data::Values;
    use trustmesh_proto::v1::{DoubleValues, StringValues};

    use super::super::StoredRows;
    use super::*;

    #[test]
    fn rows_are_encoded_as_stored_rows_column_by_column() {
        let columns = vec![
            ColumnData {
                name: "x".to_owned(),
                valid: vec![true, false],
                values: Some(Values::Floats(DoubleValues {
                    values: vec![1.5, 0.0],
                })),
            },
            ColumnData {
                name: "s".to_owned(),
                valid: Vec::new(),
                values: Some(Values::Strings(StringValues {
                    values: vec!["a".to_owned(), "b".to_owned()],
                })),
            },
        ];
        let whole = StoredRows {
            row_count: 2,
            columns: columns.clone(),
        }
        .encode_to_vec();
        let mut pieces = Vec::new();
        prost::encoding::uint64::encode(1, &2_u64, &mut pieces);
        for column in &columns {
            prost::encoding::message::encode(2, column, &mut pieces);
        }
        assert_eq!(pieces, whole);
    }

    #[tokio::test]
    async fn a_reader_reads_across_pieces_and_fails_when_abandoned() {
        let (tx, pieces) = mpsc::channel(8);
        for piece in [&b"ab"[..], b"", b"cde"] {
            tx.send(Some(Bytes::from_static(piece))).await.unwrap();
        }
        tx.send(None).await.unwrap();
        let mut reader = PieceReader {
            pieces,
            current: Bytes::new(),
            ended: false,
        };
        let text = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            reader.read_to_string(&mut text).map(|_| text)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(text, "abcde");

        let (tx, pieces) = mpsc::channel(8);
        tx.send(Some(Bytes::from_static(b"ab"))).await.unwrap();
        drop(tx);
        let reader = PieceReader {
            pieces,
            current: Bytes::new(),
            ended: false,
        };
        let whole = tokio::task::spawn_blocking(move || reader.into_bytes())
            .await
            .unwrap();
        assert_eq!(whole.unwrap_err().code, "UPLOAD_UNREADABLE");
    }
}
