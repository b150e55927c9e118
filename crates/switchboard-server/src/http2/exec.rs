//! [`TrackedExec`]: where hyper spawns the tasks of an HTTP/2 connection (one per stream):
//! on the server's task tracker, so shutdown waits for them as for connections.

use std::future::Future;

use tokio_util::task::TaskTracker;

/// hyper's executor for HTTP/2: spawns on the server's [`TaskTracker`].
#[derive(Clone)]
pub(crate) struct TrackedExec(pub(crate) TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}
