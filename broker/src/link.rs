//! The in-process link the ingest reads publishes from.
//!
//! rumqttd parks a local link after ~200 queued notifications (`Unschedule`) until it says
//! `ready()`, and silently skips messages when a reader lags more than the filter's ring.
//! [`IngestLink`] hides the first and makes the second visible: every forward carries its
//! position in the filter's commit log, and a jump in that position is counted as loss.
//!
//! The same positions acknowledge: with `BrokerConfig::ack_when_durable` the router holds each
//! device's PUBACK until the reader confirms, through [`DurableAck`], that every message up to
//! a position is durable; a lost range is reported so those publishes are never acknowledged.

use std::time::{Duration, Instant};

use rumqttd::Notification;
use rumqttd::local::{self, DurableHandle, LinkRx, LinkTx};
use tracing::error;

use crate::BrokerError;

/// One publish as the device sent it.
#[derive(Debug, Clone)]
pub struct RawPublish {
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
    /// Position in the ingest filter's log: what [`DurableAck::confirm`] takes.
    pub offset: Option<u64>,
}

/// Confirms to the router which publishes the ingest has made durable, so that it sends their
/// PUBACKs. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct DurableAck(DurableHandle);

impl DurableAck {
    /// Every publish up to and including `offset` is durable. Blocks while the router's event
    /// channel is full (the router never waits on the ingest, so this always ends). Nothing
    /// happens when the router is gone: there is no one left to acknowledge.
    pub fn confirm(&self, offset: u64) {
        let _ = self.0.confirm(offset);
    }
}

#[derive(Debug)]
pub enum LinkEvent {
    Publish(RawPublish),
    /// The router dropped this many messages because the ingest lagged more than the ring.
    Lost(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The router thread is gone; nothing more will arrive. Fatal for the process.
    #[error("the MQTT router stopped: {0}")]
    RouterGone(String),
}

pub struct IngestLink {
    // Kept so the router does not see the link disconnect.
    tx: LinkTx,
    rx: LinkRx,
    /// Absolute offset in the filter's commit log of the last forward seen.
    last_offset: Option<u64>,
    /// A publish held back while the loss before it is reported.
    pending: Option<RawPublish>,
}

impl IngestLink {
    pub(crate) fn subscribe(
        mut tx: LinkTx,
        rx: LinkRx,
        filter: &str,
    ) -> Result<IngestLink, BrokerError> {
        tx.subscribe(filter)
            .map_err(|e| BrokerError::Link(e.to_string()))?;
        Ok(IngestLink {
            tx,
            rx,
            last_offset: None,
            pending: None,
        })
    }

    /// The handle that confirms durable offsets (see the module documentation).
    pub fn durable_ack(&self) -> DurableAck {
        DurableAck(self.tx.durable_handle())
    }

    /// Waits up to `timeout` for the next event. `Ok(None)` means nothing arrived in time.
    /// Blocking: run it on a thread of its own, never on the async runtime.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<LinkEvent>, LinkError> {
        if let Some(publish) = self.pending.take() {
            return Ok(Some(LinkEvent::Publish(publish)));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let notification = match self.rx.recv_deadline(deadline) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(local::LinkError::RecvTimeout(flume::RecvTimeoutError::Timeout)) => {
                    return Ok(None);
                }
                Err(e) => {
                    error!(error = %e, "ingest link lost the router");
                    return Err(LinkError::RouterGone(e.to_string()));
                }
            };
            match notification {
                Notification::Forward(forward) => {
                    let publish = RawPublish {
                        topic: forward.publish.topic.to_vec(),
                        payload: forward.publish.payload.to_vec(),
                        offset: forward.cursor.map(|(_, offset)| offset),
                    };
                    if let Some((_, offset)) = forward.cursor {
                        let lost = match self.last_offset {
                            Some(last) if offset > last + 1 => offset - last - 1,
                            _ => 0,
                        };
                        if lost > 0 {
                            // Never to be acknowledged: their clients are disconnected and
                            // publish them again.
                            let from = self.last_offset.map_or(0, |last| last + 1);
                            let _ = self.tx.durable_handle().lost(from, offset - 1);
                        }
                        self.last_offset = Some(offset);
                        if lost > 0 {
                            // Report the loss first; the publish is returned by the next call.
                            self.pending = Some(publish);
                            return Ok(Some(LinkEvent::Lost(lost)));
                        }
                    }
                    return Ok(Some(LinkEvent::Publish(publish)));
                }
                Notification::Unschedule => {
                    if let Err(e) = self.rx.ready() {
                        return Err(LinkError::RouterGone(e.to_string()));
                    }
                }
                Notification::Disconnect(..) => {
                    return Err(LinkError::RouterGone("router disconnected the link".into()));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
