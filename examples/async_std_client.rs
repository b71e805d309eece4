//! A client on async-std: connects to the broker at HOST:PORT, or starts an embedded broker of
//! its own on a free loopback port when none is given; subscribes, publishes one message at each
//! QoS, prints each as it comes back, and exits.
//!
//! ```sh
//! cargo run --example async_std_client                     # with an embedded broker
//! cargo run --example async_std_client -- 127.0.0.1:1883   # with yours
//! ```

use std::time::Duration;

use mqtt_async_std::{Broker, Client, ClientOptions, QoS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
        let (address, broker) = match std::env::args().nth(1) {
            Some(address) => (address, None),
            None => {
                let broker = Broker::builder()
                    .bind("127.0.0.1:0".parse()?)
                    .build()
                    .await?;
                (broker.local_addrs()[0].to_string(), Some(broker.spawn()))
            }
        };
        let (host, port) = address.rsplit_once(':').ok_or("expected HOST:PORT")?;
        println!("broker {address}");

        let client = Client::connect(ClientOptions::new(host, port.parse()?)).await?;
        let topic = "mqtt-rs/examples/async-std";
        let mut messages = client.subscribe(topic, QoS::ExactlyOnce).await?;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("hello from async-std at QoS {}", qos.as_u8());
            client.publish(topic, payload, qos).await?;
        }
        for _ in 0..3 {
            let message = async_std::future::timeout(Duration::from_secs(5), messages.recv())
                .await?
                .ok_or("the subscription ended")?;
            println!(
                "received {} qos={} payload={:?}",
                message.topic(),
                message.qos().as_u8(),
                String::from_utf8_lossy(message.payload())
            );
        }

        client.disconnect().await?;
        if let Some(broker) = broker {
            broker.stop().await;
        }
        println!("done");
        Ok(())
    })
}
