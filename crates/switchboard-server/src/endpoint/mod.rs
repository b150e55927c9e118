//! The WebSocket endpoints: [`echo`] (the lean loop of its own), and the [`chat`] and
//! [`pubsub`] apps the [session](crate::session) loop runs, and the [`presence`] they share.

pub(crate) mod chat;
pub(crate) mod echo;
pub(crate) mod presence;
pub(crate) mod pubsub;

#[cfg(test)]
mod testing;
