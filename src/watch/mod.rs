//! Stage ⑤ — the hub: which live subscriptions read which cache entries, the one poller
//! per polled entry and the one feeder per `@updates` entry ([`patch`] applies a
//! message). It sits below the executor: `resolve` registers what a run read here, and
//! `live` (subscriptions, above the executor) is woken from here; it imports neither.

pub mod hub;
pub mod patch;

pub use hub::Hub;
