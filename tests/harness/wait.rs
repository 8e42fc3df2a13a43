//! Asking again until something is there: the service does much of its work
//! in the background (webhook workers, the outbox, queues), so a test asks
//! until the answer it waits for comes, for a bounded time.

use std::time::Duration;
use tokio::time::Instant;

/// How often a test asks again, unless it says otherwise.
pub const POLL: Duration = Duration::from_millis(50);

/// Asks `probe` every `every` until it answers `Ok`, for up to `within`:
/// that answer, or `Err` with the last one it gave (for the failure's
/// message). It asks at least once.
pub async fn eventually<T, E>(
    within: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(done) => return Ok(done),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Fetches with `fetch` every `every` until `ready` holds for what it got,
/// for up to `within`: `Ok` with that, or `Err` with the last it got.
pub async fn until<T>(
    within: Duration,
    every: Duration,
    mut fetch: impl AsyncFnMut() -> T,
    ready: impl Fn(&T) -> bool,
) -> Result<T, T> {
    eventually(within, every, async || {
        let got = fetch().await;
        if ready(&got) {
            Ok(got)
        } else {
            Err(got)
        }
    })
    .await
}
