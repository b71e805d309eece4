//! The client from blocking code, with no async anywhere in the program: an embedded broker on
//! a thread of its own, a blocking client that subscribes, publishes one message at each QoS
//! (each call returns once the broker answered) and prints what arrives.
//!
//! ```sh
//! cargo run --example blocking
//! ```

use std::time::Duration;

use mqtt_tokio::blocking::Client;
use mqtt_tokio::{Broker, ClientOptions, QoS, Version};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A broker on 127.0.0.1, on a port the kernel picks; it ends with the program.
    let (_broker, addrs) = Broker::start_in_thread(Broker::builder().bind("127.0.0.1:0".parse()?))?;
    println!("broker listening on {}", addrs[0]);

    // The client's own thread runs its connection; these calls block until they are done.
    let client = Client::connect(
        ClientOptions::new(addrs[0].ip().to_string(), addrs[0].port())
            .version(Version::V5)
            .client_id("blocking"),
    )?;
    let mut messages = client.subscribe("blocking/#", QoS::ExactlyOnce)?;

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("hello at QoS {}", qos.as_u8());
        let published = client.publish("blocking/greeting", payload, qos)?;
        println!("published at {qos:?}: {:?}", published.reason_code);
    }

    for _ in 0..3 {
        let message = messages.recv_timeout(Duration::from_secs(5))?;
        println!(
            "received {} qos={} payload={:?}",
            message.topic(),
            message.qos().as_u8(),
            String::from_utf8_lossy(message.payload())
        );
    }

    // Dropping the client would disconnect as well.
    client.disconnect()?;
    println!("done");
    Ok(())
}
