//! A thread that does one job at a time for its owner, while the owner
//! does something else: the log's writer hands it a group to insert into
//! sled, then syncs the journal, then collects the result.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// The thread, and the way to it.
pub(crate) struct Worker<J, R> {
    jobs: Option<Sender<J>>,
    results: Receiver<R>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static, R: Send + 'static> Worker<J, R> {
    /// Starts a thread named `name` that runs `work` on each job.
    pub(crate) fn start(
        name: &str,
        mut work: impl FnMut(J) -> R + Send + 'static,
    ) -> std::io::Result<Worker<J, R>> {
        let (jobs, inbox) = crossbeam_channel::bounded::<J>(1);
        let (outbox, results) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for job in inbox {
                    if outbox.send(work(job)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
        })
    }

    /// Hands over a job; [`Worker::finish`] collects its result. One job
    /// at a time: each `begin` is followed by a `finish`.
    pub(crate) fn begin(&self, job: J) {
        if let Some(jobs) = &self.jobs {
            // Fails only if the thread has ended, which `finish` reports.
            let _ = jobs.send(job);
        }
    }

    /// Waits for the result of the job begun last; `None` if the thread
    /// ended without giving one.
    pub(crate) fn finish(&self) -> Option<R> {
        self.results.recv().ok()
    }
}

impl<J, R> Drop for Worker<J, R> {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    #[test]
    fn each_job_gives_its_result_in_turn() {
        let mut total = 0;
        let worker = Worker::start("test-worker", move |n: u64| {
            total += n;
            total
        })
        .unwrap();
        for (n, expected) in [(1, 1), (2, 3), (4, 7)] {
            worker.begin(n);
            assert_eq!(worker.finish(), Some(expected));
        }
    }
}
