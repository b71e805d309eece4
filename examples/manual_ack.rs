//! Manual acknowledgement: messages are acknowledged only once the application has handled
//! them. One dropped without `ack` is redelivered by the broker after a reconnect; acks reach
//! the wire in the order messages arrived, whatever order the application acks in.
//!
//! ```sh
//! cargo run --example manual_ack
//! ```

use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, QoS, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::builder()
        .bind("127.0.0.1:0".parse()?)
        .build()
        .await?;
    let addr = broker.local_addrs()[0];
    let handle = broker.spawn();
    let options = || ClientOptions::new(addr.ip().to_string(), addr.port());

    let worker = Client::connect(options().client_id("worker")).await?;
    let mut jobs = worker
        .subscribe_with(
            SubscribeOptions::new("jobs/+")
                .qos(QoS::AtLeastOnce)
                .manual_ack(),
        )
        .await?;

    let producer = Client::connect(options().client_id("producer")).await?;
    for n in 1..=3 {
        producer
            .publish(format!("jobs/{n}"), format!("job {n}"), QoS::AtLeastOnce)
            .await?;
    }

    let mut received = Vec::new();
    for _ in 0..3 {
        let job = tokio::time::timeout(Duration::from_secs(5), jobs.recv())
            .await?
            .ok_or("subscription ended")?;
        println!(
            "handling {}: {}",
            job.topic(),
            String::from_utf8_lossy(job.payload())
        );
        received.push(job);
    }
    // Acknowledge in reverse: the client still sends the PUBACKs in arrival order.
    while let Some(job) = received.pop() {
        println!("acknowledging {}", job.topic());
        job.ack().await?;
    }

    worker.disconnect().await?;
    producer.disconnect().await?;
    handle.stop().await;
    println!("done");
    Ok(())
}
