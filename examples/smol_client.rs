//! A client on smol: connects to the broker at HOST:PORT, or starts an embedded broker of its
//! own on a free loopback port when none is given; subscribes, publishes one message at each
//! QoS, prints each as it comes back, and exits.
//!
//! ```sh
//! cargo run --example smol_client                     # with an embedded broker
//! cargo run --example smol_client -- 127.0.0.1:1883   # with yours
//! ```
//!
//! The client's connection and the broker run on smol's global executor, which has threads of
//! its own: `smol::block_on` on the main thread is all the program needs.

use std::time::Duration;

use mqtt_smol::{Broker, Client, ClientOptions, QoS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
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
        let topic = "mqtt-rs/examples/smol";
        let mut messages = client.subscribe(topic, QoS::ExactlyOnce).await?;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("hello from smol at QoS {}", qos.as_u8());
            client.publish(topic, payload, qos).await?;
        }
        for _ in 0..3 {
            let timeout = async {
                smol::Timer::after(Duration::from_secs(5)).await;
                None
            };
            let message = smol::future::or(messages.recv(), timeout)
                .await
                .ok_or("no message within 5 s")?;
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
