//! What the bridge does with each event of its two cores: forward a message, settle one the
//! other side acknowledged.

use std::ops::ControlFlow;
use std::time::Instant;

use mqtt_proto::connection::{AckToken, ClientEvent, ClientState};
use mqtt_proto::packet::{Publish, SubscribeProperties};

use super::Bridge;
use crate::broker::bridge::{BridgeTopic, forwarded};

impl Bridge {
    /// Handles what both cores have to say; `Break` with the reason when the remote connection
    /// ended.
    pub(super) fn process(&mut self, now: Instant) -> ControlFlow<String> {
        loop {
            let mut any = false;
            while let Some(event) = self.remote.as_mut().and_then(|l| l.conn.poll_event()) {
                any = true;
                self.on_remote(now, event)?;
            }
            while let Some(event) = self.local.as_mut().and_then(|l| l.conn.poll_event()) {
                any = true;
                self.on_local(now, event);
            }
            if !any {
                return ControlFlow::Continue(());
            }
        }
    }

    fn on_remote(&mut self, now: Instant, event: ClientEvent) -> ControlFlow<String> {
        match event {
            ClientEvent::Connected {
                session_present, ..
            } => {
                self.backoff.connected(now);
                if !session_present {
                    self.inward.source_started_anew();
                }
                let subscriptions = self.in_subscriptions();
                if let Some(link) = &mut self.remote
                    && !subscriptions.is_empty()
                {
                    let _ = link
                        .conn
                        .subscribe(now, subscriptions, SubscribeProperties::default());
                }
                self.came_up();
            }
            ClientEvent::Message(message) => self.forward_in(now, message.publish, message.ack),
            ClientEvent::Published(outcome) => self.out_completed(
                now,
                outcome.packet_id.get(),
                !outcome.reason_code.is_error(),
            ),
            ClientEvent::PublishDropped { packet_id, .. } => {
                self.out_completed(now, packet_id.get(), false)
            }
            ClientEvent::Subscribed(suback) => {
                if let Some(code) = suback.reason_codes.iter().find(|c| c.is_error()) {
                    self.status().last_error =
                        Some(format!("the remote broker refused an in topic: {code}"));
                }
            }
            ClientEvent::Disconnected(reason) => {
                return ControlFlow::Break(format!("disconnected: {reason}"));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn on_local(&mut self, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::Connected {
                session_present, ..
            } => {
                if !session_present {
                    // This broker lost the bridge's session: subscribe again.
                    self.out.source_started_anew();
                    let subscriptions = self.out_subscriptions();
                    if let Some(link) = &mut self.local
                        && !subscriptions.is_empty()
                    {
                        let _ =
                            link.conn
                                .subscribe(now, subscriptions, SubscribeProperties::default());
                    }
                }
                while let Some((publish, token)) = self.waiting.pop_front() {
                    self.forward_in_now(now, publish, token);
                }
            }
            ClientEvent::Message(message) => self.forward_out(now, message.publish, message.ack),
            ClientEvent::Published(outcome) => self.in_completed(now, outcome.packet_id.get()),
            ClientEvent::PublishDropped { packet_id, .. } => {
                self.in_completed(now, packet_id.get())
            }
            ClientEvent::Disconnected(_) => {
                // This broker closed the connection: it is stopping.
                self.local = None;
            }
            _ => {}
        }
    }

    /// A message from this broker: publish it remotely; it is acknowledged here when the remote
    /// broker acknowledged it.
    fn forward_out(&mut self, now: Instant, received: Publish, token: Option<AckToken>) {
        let name = self
            .filters
            .iter()
            .find(|f| f.rule.direction.out() && f.local.matches(&received.topic))
            .and_then(|f| {
                BridgeTopic::remap(&received.topic, &f.rule.local_prefix, &f.rule.remote_prefix)
            });
        let (Some(name), Some(remote)) = (name, self.remote.as_mut()) else {
            self.ack_local(now, token);
            return;
        };
        let source_id = received.packet_id.map(|id| id.get());
        if let Some(id) = source_id
            && let Ok(ack) = self.out.arrived(id, token)
        {
            self.ack_local(now, ack);
            return;
        }
        match remote.conn.publish(now, forwarded(&received, name)) {
            Ok(Some(destination_id)) => {
                if let Some(id) = source_id {
                    self.out.sent(id, token, destination_id.get());
                }
            }
            Ok(None) => {
                self.status().sent += 1;
                self.ack_local(now, token);
            }
            Err(_) => {
                self.status().refused += 1;
                self.ack_local(now, token);
            }
        }
    }

    fn out_completed(&mut self, now: Instant, destination_id: u16, accepted: bool) {
        {
            let mut status = self.status();
            if accepted {
                status.sent += 1;
            } else {
                status.refused += 1;
            }
        }
        let token = self.out.completed(destination_id);
        self.ack_local(now, token);
    }

    fn ack_local(&mut self, now: Instant, token: Option<AckToken>) {
        if let (Some(token), Some(local)) = (token, &mut self.local) {
            let _ = local.conn.ack(now, token);
        }
    }

    /// A message from the remote broker: publish it here; it is acknowledged there when this
    /// broker took it.
    fn forward_in(&mut self, now: Instant, received: Publish, token: Option<AckToken>) {
        let local_up = self
            .local
            .as_ref()
            .is_some_and(|l| l.conn.state() == ClientState::Connected);
        if local_up {
            self.forward_in_now(now, received, token);
        } else {
            self.waiting.push_back((received, token));
        }
    }

    fn forward_in_now(&mut self, now: Instant, received: Publish, token: Option<AckToken>) {
        let name = self
            .filters
            .iter()
            .find(|f| f.rule.direction.inward() && f.remote.matches(&received.topic))
            .and_then(|f| {
                BridgeTopic::remap(&received.topic, &f.rule.remote_prefix, &f.rule.local_prefix)
            });
        let (Some(name), Some(local)) = (name, self.local.as_mut()) else {
            self.ack_remote(now, token);
            return;
        };
        let source_id = received.packet_id.map(|id| id.get());
        if let Some(id) = source_id
            && let Ok(ack) = self.inward.arrived(id, token)
        {
            self.ack_remote(now, ack);
            return;
        }
        match local.conn.publish(now, forwarded(&received, name)) {
            Ok(Some(destination_id)) => {
                if let Some(id) = source_id {
                    self.inward.sent(id, token, destination_id.get());
                }
            }
            Ok(None) | Err(_) => {
                self.status().received += 1;
                self.ack_remote(now, token);
            }
        }
    }

    fn in_completed(&mut self, now: Instant, destination_id: u16) {
        self.status().received += 1;
        let token = self.inward.completed(destination_id);
        self.ack_remote(now, token);
    }

    fn ack_remote(&mut self, now: Instant, token: Option<AckToken>) {
        if let (Some(token), Some(remote)) = (token, &mut self.remote) {
            let _ = remote.conn.ack(now, token);
        }
    }
}
