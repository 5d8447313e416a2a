//! Page streams: every `List*` RPC as a stream of items that fetches the next page when the
//! previous one is consumed.

use std::future::Future;

use futures::{Stream, TryStreamExt as _};

use crate::error::Error;

/// The page size asked of the server.
pub(crate) const PAGE_SIZE: i32 = 100;

/// The items of every page `fetch(page_token)` returns, in order; `fetch` answers the page's
/// items and the next page token (empty on the last page).
pub(crate) fn pages<T, F, Fut>(fetch: F) -> impl Stream<Item = Result<T, Error>> + Send
where
    T: Send,
    F: FnMut(String) -> Fut + Send,
    Fut: Future<Output = Result<(Vec<T>, String), Error>> + Send,
{
    futures::stream::try_unfold(
        (fetch, Some(String::new())),
        |(mut fetch, token)| async move {
            let Some(token) = token else {
                return Ok::<_, Error>(None);
            };
            let (items, next) = fetch(token).await?;
            let next = (!next.is_empty()).then_some(next);
            Ok(Some((
                futures::stream::iter(items.into_iter().map(Ok)),
                (fetch, next),
            )))
        },
    )
    .try_flatten()
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;

    #[tokio::test]
    async fn every_page_is_fetched_once_in_order() {
        let mut asked = Vec::new();
        let items: Vec<u32> = pages(|token: String| {
            asked.push(token.clone());
            async move {
                Ok(match token.as_str() {
                    "" => (vec![1, 2], "p2".to_owned()),
                    "p2" => (vec![], "p3".to_owned()),
                    _ => (vec![3], String::new()),
                })
            }
        })
        .try_collect()
        .await
        .unwrap();
        assert_eq!(items, [1, 2, 3]);
        assert_eq!(asked, ["", "p2", "p3"]);
    }
}
