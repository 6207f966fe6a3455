//! A topic's subscribers, grouped by the connection they came on: one change is pushed to a
//! connection's subscriptions together (one lock of its outbox, one wake-up of its writer,
//! one write), and a large topic's push goes out in slices of connections, between which
//! the writers already woken run ([`crate::live::topic`]): the first subscriber is written
//! to as soon as its slice is pushed, not after the whole topic.
//!
//! While a push is under way (between [`Members::begin`] and [`Members::finish`]),
//! connections are not moved: a subscriber leaving empties its group in place, and
//! newcomers are appended past the end the push was given, so none is skipped or reached
//! twice; emptied groups are swept at the end.

use super::outbox::{Frame, Outbox, Scratch};
use bytes::Bytes;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// How a transport frames results for one subscriber.
pub trait Framing: Send + Sync {
    /// What goes before and after a result (a JSON GraphQL response) in its message.
    fn parts(&self) -> (&Arc<str>, &'static str);
    /// A result's message.
    fn next(&self, body: &Bytes) -> Frame {
        let (head, tail) = self.parts();
        Frame::Parts {
            head: head.clone(),
            body: body.clone(),
            tail,
        }
    }
    /// The request error that ends the subscription (a JSON response with `errors`).
    fn failure(&self, body: &Bytes) -> Frame;
    /// The message that says the subscription is over, if the transport has one.
    fn complete(&self) -> Option<Frame>;
    /// The transport's name in `livegate_messages_pushed_total`.
    fn transport(&self) -> &'static str;
}

/// Where one subscriber's results go.
pub struct Subscriber {
    pub outbox: Arc<Outbox>,
    pub framing: Arc<dyn Framing>,
    /// The subscription's number on its connection: it comes back in [`Frame::Ended`].
    pub tag: u64,
}

/// One subscription in its connection's group.
struct Member {
    id: u64,
    framing: Arc<dyn Framing>,
    tag: u64,
}

/// The subscriptions of one connection.
struct Group {
    outbox: Arc<Outbox>,
    members: Vec<Member>,
}

/// A connection by its outbox's address (stable while any subscriber holds it).
fn address(outbox: &Arc<Outbox>) -> usize {
    Arc::as_ptr(outbox) as usize
}

#[derive(Default)]
pub struct Members {
    groups: Vec<Group>,
    /// Each connection's place in `groups`.
    at: HashMap<usize, usize>,
    /// Each subscriber's connection.
    of: HashMap<u64, usize>,
    /// A push is under way: groups stay where they are.
    pushing: bool,
    /// Groups emptied during a push, to sweep after it.
    emptied: bool,
}

/// What one push did: subscriptions reached, per transport, and dropped (their
/// connection is gone).
#[derive(Default)]
pub struct Pushed {
    pub by_transport: [(&'static str, u64); 4],
    pub reached: u64,
    pub dropped: u64,
    /// Where a connection's frames are framed for a direct write.
    scratch: Scratch,
}

impl Members {
    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }

    pub fn insert(&mut self, id: u64, s: Subscriber) {
        let key = address(&s.outbox);
        let member = Member {
            id,
            framing: s.framing,
            tag: s.tag,
        };
        match self.at.get(&key) {
            Some(&i) => self.groups[i].members.push(member),
            None => {
                self.at.insert(key, self.groups.len());
                self.groups.push(Group {
                    outbox: s.outbox,
                    members: vec![member],
                });
            }
        }
        self.of.insert(id, key);
    }

    pub fn remove(&mut self, id: u64) {
        let Some(key) = self.of.remove(&id) else {
            return;
        };
        let Some(&i) = self.at.get(&key) else {
            return;
        };
        let group = &mut self.groups[i];
        group.members.retain(|m| m.id != id);
        if group.members.is_empty() {
            if self.pushing {
                self.emptied = true;
            } else {
                self.drop_group(i);
            }
        }
    }

    fn drop_group(&mut self, i: usize) {
        let gone = self.groups.swap_remove(i);
        self.at.remove(&address(&gone.outbox));
        if let Some(moved) = self.groups.get(i) {
            self.at.insert(address(&moved.outbox), i);
        }
    }

    /// Every subscriber, taken out (the topic ends).
    pub fn take(&mut self) -> Vec<Subscriber> {
        let groups = std::mem::take(&mut self.groups);
        *self = Members::default();
        groups
            .into_iter()
            .flat_map(|g| {
                let outbox = g.outbox;
                g.members.into_iter().map(move |m| Subscriber {
                    outbox: outbox.clone(),
                    framing: m.framing,
                    tag: m.tag,
                })
            })
            .collect()
    }

    /// A push starts: the connections it is for are `0..` what this returns.
    pub fn begin(&mut self) -> usize {
        self.pushing = true;
        self.groups.len()
    }

    /// Pushes `body` (a live result when `live`, else an event) to the connections in
    /// `range`, each connection's frames at once; with `direct`, written by this task to
    /// the sockets lent to their outboxes (see [`Outbox::push_parts`]).
    pub fn push(
        &mut self,
        range: Range<usize>,
        body: &Bytes,
        (live, direct): (bool, bool),
        out: &mut Pushed,
    ) {
        let end = range.end.min(self.groups.len());
        for group in &mut self.groups[range.start.min(end)..end] {
            if group.members.is_empty() {
                continue;
            }
            let parts = group.members.iter().map(|m| {
                let (head, tail) = m.framing.parts();
                (m.tag, head, tail)
            });
            if group
                .outbox
                .push_parts((live, direct), body, parts, &mut out.scratch)
            {
                for m in &group.members {
                    let transport = m.framing.transport();
                    if let Some(slot) = out
                        .by_transport
                        .iter_mut()
                        .find(|(t, n)| *t == transport || *n == 0)
                    {
                        *slot = (transport, slot.1 + 1);
                    }
                }
                out.reached += group.members.len() as u64;
            } else {
                // The connection is gone: its subscribers leave with it.
                out.dropped += group.members.len() as u64;
                for m in group.members.drain(..) {
                    self.of.remove(&m.id);
                }
                self.emptied = true;
            }
        }
    }

    /// The push is over: emptied groups are swept.
    pub fn finish(&mut self) {
        self.pushing = false;
        if std::mem::take(&mut self.emptied) {
            self.groups.retain(|g| !g.members.is_empty());
            self.at.clear();
            for (i, g) in self.groups.iter().enumerate() {
                self.at.insert(address(&g.outbox), i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain(Arc<str>);
    impl Framing for Plain {
        fn parts(&self) -> (&Arc<str>, &'static str) {
            (&self.0, "")
        }
        fn failure(&self, body: &Bytes) -> Frame {
            self.next(body)
        }
        fn complete(&self) -> Option<Frame> {
            None
        }
        fn transport(&self) -> &'static str {
            "test"
        }
    }

    fn outbox() -> Arc<Outbox> {
        Outbox::new(
            1 << 20,
            prometheus::IntCounter::new("d", "d").expect("a counter"),
        )
    }

    fn sub(outbox: &Arc<Outbox>, tag: u64) -> Subscriber {
        Subscriber {
            outbox: outbox.clone(),
            framing: Arc::new(Plain(Arc::from(""))),
            tag,
        }
    }

    async fn queued(o: &Outbox) -> usize {
        o.push_now([Frame::Text(String::new())]);
        o.take(usize::MAX).await.len() - 1
    }

    #[tokio::test]
    async fn a_push_in_slices_reaches_each_subscriber_once_whatever_happens_between() {
        let (a, b, c, d) = (outbox(), outbox(), outbox(), outbox());
        let mut m = Members::default();
        m.insert(1, sub(&a, 1));
        m.insert(2, sub(&a, 2));
        m.insert(3, sub(&b, 1));
        m.insert(4, sub(&c, 1));
        let end = m.begin();
        assert_eq!(end, 3, "one group per connection");
        let mut out = Pushed::default();
        let body = Bytes::from_static(b"x");
        m.push(0..1, &body, (false, false), &mut out);
        // Between slices: the first connection leaves, the last one's connection closes,
        // a newcomer arrives.
        m.remove(1);
        m.remove(2);
        c.close();
        m.insert(5, sub(&d, 1));
        m.push(1..end, &body, (false, false), &mut out);
        m.finish();
        assert_eq!((out.reached, out.dropped), (3, 1));
        assert_eq!(queued(&a).await, 2, "both of a's frames, pushed at once");
        assert_eq!(queued(&b).await, 1);
        assert_eq!(
            queued(&d).await,
            0,
            "a newcomer is not part of a push under way"
        );
        // Swept: a and c are gone, b and d remain, and d's place is known.
        assert_eq!(m.groups.len(), 2);
        m.remove(5);
        assert_eq!(m.groups.len(), 1);
        assert!(!m.is_empty());
        m.remove(3);
        assert!(m.is_empty() && m.groups.is_empty() && m.at.is_empty());
    }
}
