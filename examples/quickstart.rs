//! The quickstart: start an embedded broker on a free loopback port, connect a client,
//! subscribe, publish one message at each QoS, print what arrives, and exit.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, QoS, Version};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A broker on 127.0.0.1, on a port the kernel picks.
    let broker = Broker::builder()
        .bind("127.0.0.1:0".parse()?)
        .build()
        .await?;
    let addr = broker.local_addrs()[0];
    let handle = broker.spawn();
    println!("broker listening on {addr}");

    let client = Client::connect(
        ClientOptions::new(addr.ip().to_string(), addr.port())
            .version(Version::V5)
            .client_id("quickstart"),
    )
    .await?;
    let mut messages = client.subscribe("quickstart/#", QoS::ExactlyOnce).await?;

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("hello at QoS {}", qos.as_u8());
        let published = client.publish("quickstart/greeting", payload, qos).await?;
        println!("published at {qos:?}: {:?}", published.reason_code);
    }

    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await?
            .ok_or("subscription ended")?;
        println!(
            "received {} at {:?}: {}",
            message.topic(),
            message.qos(),
            String::from_utf8_lossy(message.payload())
        );
    }

    client.disconnect().await?;
    handle.stop().await;
    println!("done");
    Ok(())
}
