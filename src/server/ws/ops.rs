//! The operations one socket runs, by id: what keeps each going (a task or its place in a
//! shared subscription), and the registration it was started under.

use super::*;

/// What keeps an operation going: a task (a query or mutation running, a subscription
/// being set up), or its place in a shared subscription.
pub(super) enum Handle {
    /// Registered; its task is about to be stored.
    Starting,
    Task(AbortHandle),
    Subscribed(#[allow(dead_code)] live::Subscribed),
}

/// One running operation, and the registration it was started under. An id can be reused
/// as soon as its operation is stopped, so an old operation, ending late, must remove
/// only its own registration, never a newer one under the same id.
pub(super) struct Running {
    tag: u64,
    handle: Handle,
}

impl Running {
    /// Stops the operation (leaving a subscription is dropping its place).
    pub(super) fn halt(self) {
        if let Handle::Task(task) = self.handle {
            task.abort();
        }
    }
}

/// Running operations of one socket, by id.
#[derive(Clone, Default)]
pub(super) struct Ops(Arc<Mutex<OpsInner>>);

/// A list, not a map: a socket runs few operations (`--max-operations-per-connection`,
/// 100 by default), and most run one, which a map would give room for several.
#[derive(Default)]
pub(super) struct OpsInner {
    by_id: Vec<(Box<str>, Running)>,
    next_tag: u64,
}

impl OpsInner {
    pub(super) fn by_tag(&mut self, tag: u64) -> Option<&mut Running> {
        self.by_id
            .iter_mut()
            .find(|(_, r)| r.tag == tag)
            .map(|(_, r)| r)
    }

    pub(super) fn remove(&mut self, found: impl Fn(&str, &Running) -> bool) -> Option<Running> {
        let at = self.by_id.iter().position(|(id, r)| found(id, r))?;
        let (_, running) = self.by_id.swap_remove(at);
        if self.by_id.is_empty() {
            self.by_id = Vec::new();
        }
        Some(running)
    }
}

impl Ops {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, OpsInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.lock().by_id.iter().any(|(i, _)| &**i == id)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Stops the operation registered under `id`, if any.
    pub(super) fn stop(&self, id: &str) {
        let stopped = self.lock().remove(|i, _| i == id);
        if let Some(op) = stopped {
            op.halt();
        }
    }

    /// Registers a new operation under `id` (not registered yet); returns its tag.
    pub(super) fn register(&self, id: &str) -> u64 {
        let mut ops = self.lock();
        ops.next_tag += 1;
        let tag = ops.next_tag;
        if ops.by_id.len() == ops.by_id.capacity() {
            let more = ops.by_id.len().max(1);
            ops.by_id.reserve_exact(more);
        }
        ops.by_id.push((
            id.into(),
            Running {
                tag,
                handle: Handle::Starting,
            },
        ));
        tag
    }

    /// Operation `tag` runs in `task` (stopped at once if the operation was stopped, or
    /// ended, meanwhile).
    pub(super) fn running(&self, tag: u64, task: AbortHandle) {
        let mut ops = self.lock();
        match ops.by_tag(tag) {
            Some(op) if matches!(op.handle, Handle::Starting) => op.handle = Handle::Task(task),
            Some(_) => {}
            None => task.abort(),
        }
    }

    /// Operation `tag` goes on as a place in a shared subscription (dropped if the
    /// operation was stopped meanwhile). Its setup task, the caller, ends by itself.
    pub(super) fn subscribed(&self, tag: u64, place: live::Subscribed) {
        let mut ops = self.lock();
        match ops.by_tag(tag) {
            Some(op) => op.handle = Handle::Subscribed(place),
            None => {
                drop(ops);
                drop(place);
            }
        }
    }

    /// Removes operation `tag`'s registration (it has ended), if it is still there.
    pub(super) fn finished(&self, tag: u64) {
        // Not halted: it is its own task that is ending (or its subscription that ended).
        let ended = self.lock().remove(|_, r| r.tag == tag);
        drop(ended);
    }

    /// Stops every operation (the socket is closing).
    pub(super) fn stop_all(&self) {
        let all = std::mem::take(&mut self.lock().by_id);
        for (_, op) in all {
            op.halt();
        }
    }
}
