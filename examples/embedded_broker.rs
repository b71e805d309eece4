//! A broker embedded in a program that is not async: it runs on a thread of its own, with
//! explicit limits and an authorization hook, and reports its counters.
//!
//! ```sh
//! cargo run --example embedded_broker
//! ```

use std::time::Duration;

use mqtt_tokio::broker::{Authorizer, BrokerConfig, ClientInfo};
use mqtt_tokio::{Broker, Client, ClientOptions, QoS};

/// Clients may publish only under their own client identifier.
struct OwnTopics;

impl Authorizer for OwnTopics {
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        topic.split('/').next() == Some(client.client_id)
    }
    fn subscribe(&self, _client: ClientInfo<'_>, _filter: &str) -> bool {
        true
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = BrokerConfig::default();
    config.max_connections = 100;
    config.max_session_queue = 500;
    let (handle, addrs) = Broker::start_in_thread(
        Broker::builder()
            .bind("127.0.0.1:0".parse()?)
            .config(config)
            .authorizer(OwnTopics),
    )?;
    println!("broker running on {}", addrs[0]);

    // The rest of the program may be async or not; here a small tokio runtime plays a client.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let options = ClientOptions::new(addrs[0].ip().to_string(), addrs[0].port());
        let alice = Client::connect(options.clone().client_id("alice")).await?;
        let mut all = alice.subscribe("#", QoS::AtLeastOnce).await?;
        alice
            .publish("alice/status", "online", QoS::AtLeastOnce)
            .await?;
        match alice
            .publish("bob/status", "spoofed", QoS::AtLeastOnce)
            .await
        {
            Err(error) => println!("refused as expected: {error}"),
            Ok(_) => return Err("a forbidden publish was accepted".into()),
        }
        let message = tokio::time::timeout(Duration::from_secs(5), all.recv())
            .await?
            .ok_or("subscription ended")?;
        println!(
            "received {}: {}",
            message.topic(),
            String::from_utf8_lossy(message.payload())
        );
        let stats = handle.stats().await.ok_or("broker stopped")?;
        println!(
            "stats: {} connection(s), {} message(s) in, {} out, {} refused",
            stats.connections, stats.messages_in, stats.messages_out, stats.dropped.not_authorized
        );
        alice.disconnect().await?;
        handle.stop().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!("done");
    Ok(())
}
