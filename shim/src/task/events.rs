//! Task events, forwarded to containerd over ttrpc in the order they were raised.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageFull;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::EventsClient;

use crate::clock::timestamp;

struct Event {
    topic: &'static str,
    body: Any,
    at: SystemTime,
}

enum Message {
    Event(Event),
    /// Answered once every event queued before it has been handled.
    Flush(mpsc::Sender<()>),
}

/// Queues events for one sender thread.
///
/// One thread and one queue keep events in the order they were raised (containerd needs
/// `/tasks/start` before `/tasks/exit`), and a slow or restarting containerd never blocks a
/// task request or a program's exit.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Message>,
}

impl Publisher {
    /// Starts the sender thread for containerd's ttrpc socket at `address`; events are
    /// stamped with `namespace`.
    pub fn start(address: &str, namespace: &str) -> std::io::Result<Publisher> {
        let (queue, events) = mpsc::channel::<Message>();
        let address = if address.contains("://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let namespace = namespace.to_string();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || forward_all(&address, &namespace, events))?;
        Ok(Publisher { queue })
    }

    /// Queues `event` under `topic` (e.g. `/tasks/exit`).
    pub fn publish<M: MessageFull>(&self, topic: &'static str, event: &M) {
        let body = match event.write_to_bytes() {
            Ok(value) => Any {
                type_url: type_url::<M>(),
                value,
                ..Default::default()
            },
            Err(e) => {
                log::error!("encoding event {topic}: {e}");
                return;
            }
        };
        let event = Event {
            topic,
            body,
            at: SystemTime::now(),
        };
        if self.queue.send(Message::Event(event)).is_err() {
            log::error!("event sender is gone; dropped {topic}");
        }
    }

    /// Waits up to `timeout` for every queued event to be delivered (or given up on), so a
    /// shim about to exit does not lose its last `/tasks/delete`.
    pub fn flush(&self, timeout: Duration) {
        let (done, flushed) = mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_ok() && flushed.recv_timeout(timeout).is_err() {
            log::warn!("exiting with events still queued");
        }
    }
}

/// What a [`Publisher::recording`] publisher queued, for tests of which events are raised
/// and in what order.
#[cfg(test)]
pub struct Recorded(mpsc::Receiver<Message>);

#[cfg(test)]
impl Publisher {
    /// A publisher whose events are kept for the returned [`Recorded`] instead of being
    /// forwarded to containerd.
    pub fn recording() -> (Publisher, Recorded) {
        let (queue, events) = mpsc::channel::<Message>();
        (Publisher { queue }, Recorded(events))
    }
}

#[cfg(test)]
impl Recorded {
    /// The next event published, with its topic, waiting up to `timeout` for it.
    pub fn next(&self, timeout: Duration) -> Option<(&'static str, Any)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(Message::Event(event)) => return Some((event.topic, event.body)),
                Ok(Message::Flush(done)) => {
                    let _ = done.send(());
                }
                Err(_) => return None,
            }
        }
    }
}

/// The protobuf package of every task event (containerd's `events/task.proto`).
const EVENTS_PACKAGE: &str = "containerd.events";

/// The type URL containerd's typeurl registry knows an event by: its bare full name.
///
/// Built from the message's name rather than from its descriptor (`Any::pack`, or
/// `descriptor().full_name()`), because the first descriptor lookup builds the reflection
/// tables of the whole events file, about 0.6 ms of a container's start-up in a shim that
/// never needs reflection otherwise. Every event the shim publishes is a task event; the
/// tests check the names against the descriptors.
fn type_url<M: MessageFull>() -> String {
    format!("{EVENTS_PACKAGE}.{}", M::NAME)
}

/// How long the connection to containerd stays open with no event to send. ttrpc's client
/// wakes its receiver thread every 10 ms while a connection is open, so a shim whose
/// containers run for days would spend 100 wake-ups a second on a connection that carries
/// nothing; a container's events come in bursts (create, start; exit, delete), each of which
/// fits one connection.
const IDLE_CONNECTION: Duration = Duration::from_secs(1);

fn forward_all(address: &str, namespace: &str, messages: mpsc::Receiver<Message>) {
    let mut client: Option<EventsClient> = None;
    loop {
        let message = if client.is_some() {
            match messages.recv_timeout(IDLE_CONNECTION) {
                Ok(message) => message,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    client = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match messages.recv() {
                Ok(message) => message,
                Err(_) => return,
            }
        };
        let event = match message {
            Message::Event(event) => event,
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let request = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(timestamp(event.at)).into(),
                namespace: namespace.to_string(),
                topic: event.topic.to_string(),
                event: Some(event.body).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        // containerd may be restarting; retry for a while rather than lose an exit event.
        let mut delivered = false;
        for attempt in 0..20u64 {
            if client.is_none() {
                match ttrpc::Client::connect(address) {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => log::warn!("connecting to {address} for events: {e}"),
                }
            }
            if let Some(c) = &client {
                let mut context =
                    ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
                context.metadata = HashMap::from([(
                    "containerd-namespace-ttrpc".to_string(),
                    vec![namespace.to_string()],
                )]);
                match c.forward(context, &request) {
                    Ok(_) => {
                        delivered = true;
                        break;
                    }
                    Err(e) => {
                        log::warn!("forwarding {}: {e}", event.topic);
                        client = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
        if !delivered {
            log::error!("gave up forwarding {}", event.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
        TaskResumed, TaskStart,
    };

    fn named_as_its_descriptor<M: MessageFull>() {
        assert_eq!(type_url::<M>(), M::descriptor().full_name());
    }

    #[test]
    fn every_published_event_is_named_as_its_descriptor_says() {
        named_as_its_descriptor::<TaskCreate>();
        named_as_its_descriptor::<TaskStart>();
        named_as_its_descriptor::<TaskExit>();
        named_as_its_descriptor::<TaskDelete>();
        named_as_its_descriptor::<TaskExecAdded>();
        named_as_its_descriptor::<TaskExecStarted>();
        named_as_its_descriptor::<TaskOOM>();
        named_as_its_descriptor::<TaskPaused>();
        named_as_its_descriptor::<TaskResumed>();
    }
}
