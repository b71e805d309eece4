//! MQTT 5.0 request/response: a responder answers on the Response Topic of each request,
//! echoing its Correlation Data; `Client::request` does the requester's side.
//!
//! ```sh
//! cargo run --example request_response
//! ```

use std::time::Duration;

use mqtt_tokio::{Broker, Client, ClientOptions, Publish, QoS, TopicName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::builder()
        .bind("127.0.0.1:0".parse()?)
        .build()
        .await?;
    let addr = broker.local_addrs()[0];
    let handle = broker.spawn();
    let options = || ClientOptions::new(addr.ip().to_string(), addr.port());

    // The responder: upper-cases what it is sent.
    let responder = Client::connect(options().client_id("responder")).await?;
    let mut requests = responder
        .subscribe("service/upper", QoS::AtLeastOnce)
        .await?;
    let replies = responder.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let response_topic = request.properties().response_topic.clone();
            let Some(topic) = response_topic.and_then(|topic| TopicName::new(topic).ok()) else {
                continue;
            };
            let mut reply = Publish::new(
                topic,
                String::from_utf8_lossy(request.payload()).to_uppercase(),
            );
            reply.qos = QoS::AtLeastOnce;
            reply.properties.correlation_data = request.properties().correlation_data.clone();
            let _ = replies.publish_with(reply).await;
        }
    });

    let requester = Client::connect(options().client_id("requester")).await?;
    for question in ["hello", "request/response"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            requester.request("service/upper", question),
        )
        .await??;
        println!(
            "{question} -> {}",
            String::from_utf8_lossy(answer.payload())
        );
    }

    requester.disconnect().await?;
    responder.disconnect().await?;
    handle.stop().await;
    println!("done");
    Ok(())
}
