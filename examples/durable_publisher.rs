//! A publisher that loses nothing when it crashes: its session is kept in a file
//! (`ClientOptions::session_store`), so the QoS 1 and 2 messages the broker had not acknowledged
//! when the process died, even by `kill -9`, are sent again by the next run, and a QoS 2
//! message still arrives once.
//!
//! Each line of standard input, `QOS PAYLOAD` (QoS 1 or 2), is published on TOPIC; `acked
//! PAYLOAD` is printed once the broker acknowledged it. At the end of the input it waits for
//! every acknowledgement, disconnects and exits.
//!
//! ```sh
//! printf '1 first\n2 second\n' |
//!     cargo run --example durable_publisher -- 127.0.0.1:1883 publisher-1 publisher-1.session out/t
//! ```

use std::io::BufRead;
use std::time::Duration;

use mqtt_tokio::{Client, ClientOptions, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: durable_publisher HOST:PORT CLIENT_ID STORE_FILE TOPIC";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, client_id, store, topic] = args.as_slice() else {
        return Err(usage.into());
    };
    let (host, port) = address.rsplit_once(':').ok_or(usage)?;
    let options = ClientOptions::new(host, port.parse()?)
        .client_id(client_id.as_str())
        // The broker keeps its side of the session across the crash too.
        .clean_start(false)
        .session_expiry(Duration::from_secs(3600))
        .session_store(store);
    // Resends what the last run left unacknowledged, before anything new.
    let client = Client::connect(options).await?;
    println!("connected");

    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut publishes = Vec::new();
    while let Some(line) = lines.recv().await {
        let (qos, payload) = match line.split_once(' ') {
            Some(("1", payload)) => (QoS::AtLeastOnce, payload.to_string()),
            Some(("2", payload)) => (QoS::ExactlyOnce, payload.to_string()),
            _ => return Err(format!("not `1 PAYLOAD` or `2 PAYLOAD`: {line:?}").into()),
        };
        // Each publish waits for its acknowledgement on a task of its own, so that the next
        // line is published without waiting.
        let (client, topic) = (client.clone(), topic.clone());
        publishes.push(tokio::spawn(async move {
            match client.publish(topic, payload.clone(), qos).await {
                Ok(_) => {
                    println!("acked {payload}");
                    Ok(())
                }
                Err(error) => Err(format!("{payload}: {error}")),
            }
        }));
    }
    for publish in publishes {
        publish.await??;
    }
    client.disconnect().await?;
    Ok(())
}
