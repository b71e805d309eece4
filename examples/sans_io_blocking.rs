//! The sans-I/O client core driven by a plain blocking `std::net::TcpStream`: no async runtime,
//! no threads, one loop. Copy this loop when you embed `mqtt-proto` in your own event loop (mio,
//! a game loop, an embedded executor): only the "wait for bytes or a deadline" step changes.
//!
//! ```text
//! cargo run --example sans_io_blocking -- HOST:PORT [--v311]
//! ```
//!
//! It connects with MQTT 5.0 (3.1.1 with `--v311`), subscribes to a fresh topic at QoS 2, and once
//! the SUBACK is in publishes one message at each QoS (0, 1, 2) to that topic. It prints each
//! message as the broker sends it back and disconnects once all three arrived and the QoS 1 and 2
//! publishes are acknowledged. Exit status 0 then; otherwise one line on stderr and status 1 (2
//! for bad arguments). The whole run must fit in 10 seconds.
//!
//! The core never touches the socket or the clock. Each turn of the loop:
//!
//! ```text
//!   ┌─► poll_transmit ──► write_all           bytes the core wants sent
//!   │   is_closed? ──► stop
//!   │   poll_timeout ──► set_read_timeout     sleep no longer than the core's next deadline
//!   │   read ──► handle_bytes / handle_eof    what the network said
//!   │   handle_timeout(now)                   what the clock said
//!   └── poll_event ──► the application        which may call publish, subscribe, disconnect…
//! ```

use std::error::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mqtt_proto::ReasonCode;
use mqtt_proto::connection::{ClientConfig, ClientConnection, ClientEvent, DisconnectReason};
use mqtt_proto::packet::{
    Disconnect, Publish, QoS, SubscribeProperties, Subscription, TopicFilter, TopicName, Version,
};

/// The whole run, from connecting to the last message, must fit in this.
const DEADLINE: Duration = Duration::from_secs(10);

/// One message per QoS, in this order.
const QOS_LEVELS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

const USAGE: &str = "usage: sans_io_blocking HOST:PORT [--v311]";

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (address, version) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("sans_io_blocking: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Errors come back from `run` as values (no panics on network trouble) and leave as one line.
    match run(&address, version) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sans_io_blocking: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<(String, Version), String> {
    let mut address = None;
    let mut version = Version::V5;
    for arg in args {
        match arg.as_str() {
            "--v311" => version = Version::V3_1_1,
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ if address.is_some() => return Err(format!("unexpected argument {arg}")),
            _ => address = Some(arg),
        }
    }
    Ok((address.ok_or("missing HOST:PORT")?, version))
}

fn run(address: &str, version: Version) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + DEADLINE;

    // Fresh names, so that concurrent runs against one broker never see each other's messages.
    let unique = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );
    let topic = TopicName::new(format!("sans-io/{unique}"))?;

    // ---- The transport: ours to open, configure and close. The core never sees it. ----
    let socket_address = resolve(address)?;
    println!(
        "connecting to {address} with MQTT {}",
        version_name(version)
    );
    let mut stream = TcpStream::connect_timeout(&socket_address, DEADLINE)
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    // MQTT is small request/response packets: do not let Nagle's algorithm hold them back.
    stream.set_nodelay(true)?;
    // A write blocks only while the kernel's send buffer is full; never for longer than the run.
    stream.set_write_timeout(Some(DEADLINE))?;

    // ---- The protocol: `new` queues the CONNECT and arms the connect timeout. ----
    let config = ClientConfig::new(version, format!("sans-io-{unique}"));
    let mut connection = ClientConnection::new(config, None, Instant::now());
    let mut app = App::new(topic);

    // Both buffers live as long as the connection: no allocation per turn once they have grown.
    // `poll_transmit` appends every packet that is ready, so one `write_all` sends them all.
    let mut transmit = BytesMut::with_capacity(4096);
    let mut receive = vec![0u8; 16 * 1024];

    loop {
        // 1. Send everything the core has queued: the CONNECT on the first turn, then
        //    SUBSCRIBE, PUBLISH, acknowledgements, PINGREQ, DISCONNECT… `now` matters: sending
        //    restarts the keep-alive timer.
        if connection.poll_transmit(Instant::now(), &mut transmit) {
            stream
                .write_all(&transmit)
                .map_err(|error| format!("writing to {address}: {error}"))?;
            transmit.clear();
        }

        // 2. The connection has ended (we disconnected, the broker closed it, a timer expired)
        //    and its last bytes (the DISCONNECT, say) were written above: close the socket.
        if connection.is_closed() {
            break;
        }

        // 3. Wait for bytes, but no longer than the core's next deadline (keep-alive ping,
        //    CONNACK timeout, PINGRESP timeout) nor this program's own deadline. A timer that
        //    is already due still gets 1 ms: `set_read_timeout` refuses a zero duration.
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("timed out after {DEADLINE:?}: {}", app.progress()).into());
        }
        let wake_up = connection
            .poll_timeout()
            .map_or(deadline, |timer| timer.min(deadline));
        let wait = wake_up
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(wait))?;

        // 4. Feed what the network said. Any number of bytes is fine, from part of a packet to
        //    many packets: the core buffers partial packets until the rest arrives.
        match stream.read(&mut receive) {
            Ok(0) => connection.handle_eof(Instant::now()),
            Ok(read) => connection.handle_bytes(Instant::now(), &receive[..read]),
            // The read timed out (`WouldBlock` on Unix, `TimedOut` on Windows) or a signal
            // interrupted it: nothing arrived, carry on to the timers.
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // I/O errors belong to the driver, not the core. A driver that reconnects would
            // call `handle_eof` here and carry `connection.into_session()` into a new connection.
            Err(error) => return Err(format!("reading from {address}: {error}").into()),
        }

        // 5. Feed what the clock said. Calling this early or on every turn is harmless: only
        //    the timers that are due fire (the PINGREQ is queued here, for step 1 to send).
        connection.handle_timeout(Instant::now());

        // 6. Drain the events. The application reacts with commands (`subscribe`, `publish`,
        //    `disconnect`); they only queue packets, which step 1 of the next turn sends.
        while let Some(event) = connection.poll_event() {
            app.on_event(&mut connection, event)?;
        }
    }
    drop(stream);
    app.finish()
}

/// The application: everything that is this program's business rather than MQTT's.
struct App {
    topic: TopicName,
    subscribed: bool,
    /// Which QoS levels came back, indexed by QoS.
    received: [bool; 3],
    /// Our QoS 1 and 2 publishes not yet acknowledged (PUBACK, PUBCOMP).
    unacknowledged: usize,
    disconnecting: bool,
}

impl App {
    fn new(topic: TopicName) -> Self {
        Self {
            topic,
            subscribed: false,
            received: [false; 3],
            unacknowledged: 0,
            disconnecting: false,
        }
    }

    fn on_event(
        &mut self,
        connection: &mut ClientConnection,
        event: ClientEvent,
    ) -> Result<(), Box<dyn Error>> {
        match event {
            ClientEvent::Connected {
                session_present, ..
            } => {
                println!("connected (session present: {session_present})");
                // Commands return at once; the SUBSCRIBE goes out with the next transmit.
                let filter = TopicFilter::new(self.topic.as_str())?;
                let filter = Subscription::new(filter, QoS::ExactlyOnce);
                connection.subscribe(
                    Instant::now(),
                    vec![filter],
                    SubscribeProperties::default(),
                )?;
            }
            ClientEvent::Subscribed(suback) => {
                // One reason code per filter: the QoS granted, or why the broker refused.
                let granted = suback.reason_codes.first().copied();
                match granted {
                    Some(code) if !code.is_error() => {
                        println!("subscribed to {}: {code}", self.topic);
                    }
                    _ => return Err(format!("subscription refused: {granted:?}").into()),
                }
                self.subscribed = true;
                for qos in QOS_LEVELS {
                    let mut publish =
                        Publish::new(self.topic.clone(), format!("hello at QoS {}", qos.as_u8()));
                    publish.qos = qos;
                    // QoS 1 and 2 get a packet identifier and end with a `Published` event.
                    match connection.publish(Instant::now(), publish)? {
                        Some(packet_id) => {
                            self.unacknowledged += 1;
                            println!("published QoS {} (packet id {packet_id})", qos.as_u8());
                        }
                        None => println!("published QoS {}", qos.as_u8()),
                    }
                }
            }
            ClientEvent::Message(message) => {
                let publish = &message.publish;
                println!(
                    "received topic={} qos={} payload={:?}",
                    publish.topic,
                    publish.qos.as_u8(),
                    String::from_utf8_lossy(&publish.payload)
                );
                // Acknowledgements are automatic by default: the core has already queued the
                // PUBACK or PUBREC (`message.ack` is a token only with `manual_ack`).
                if publish.topic == self.topic
                    && let Some(seen) = self.received.get_mut(usize::from(publish.qos.as_u8()))
                {
                    *seen = true;
                }
            }
            ClientEvent::Published(outcome) => {
                if outcome.reason_code.is_error() {
                    return Err(format!(
                        "publish {} refused: {}",
                        outcome.packet_id, outcome.reason_code
                    )
                    .into());
                }
                self.unacknowledged = self.unacknowledged.saturating_sub(1);
                println!(
                    "publish {} acknowledged ({})",
                    outcome.packet_id, outcome.reason_code
                );
            }
            ClientEvent::PublishDropped { packet_id, error } => {
                return Err(format!("publish {packet_id} dropped: {error}").into());
            }
            // Our own `disconnect` below ends the connection with this event; anything else
            // (refused CONNACK, broker DISCONNECT, lost connection, protocol error) is a failure.
            ClientEvent::Disconnected(DisconnectReason::Local(_)) => {}
            ClientEvent::Disconnected(reason) => {
                return Err(format!("connection ended: {}", describe(&reason)).into());
            }
            // Enhanced authentication, UNSUBACK, and events added in later versions.
            _ => {}
        }

        if self.is_done() && !self.disconnecting {
            self.disconnecting = true;
            println!("all {} messages received; disconnecting", QOS_LEVELS.len());
            connection.disconnect(Instant::now(), Disconnect::new(ReasonCode::Success))?;
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.received.iter().all(|&seen| seen) && self.unacknowledged == 0
    }

    /// How far the run got, for the timeout message.
    fn progress(&self) -> String {
        if !self.subscribed {
            return "no CONNACK or SUBACK yet".into();
        }
        let received = self.received.iter().filter(|&&seen| seen).count();
        format!(
            "received {received} of {} messages, {} publishes unacknowledged",
            QOS_LEVELS.len(),
            self.unacknowledged
        )
    }

    fn finish(&self) -> Result<(), Box<dyn Error>> {
        if self.is_done() {
            Ok(())
        } else {
            Err(format!("connection closed early: {}", self.progress()).into())
        }
    }
}

fn resolve(address: &str) -> Result<SocketAddr, Box<dyn Error>> {
    address
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {address}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address").into())
}

/// Why the connection ended, in one line.
fn describe(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::Refused { reason_code, .. } => {
            format!("the broker refused the connection: {reason_code}")
        }
        DisconnectReason::Remote(disconnect) => {
            format!("the broker disconnected: {}", disconnect.reason_code)
        }
        DisconnectReason::Protocol(error) => format!("protocol error: {error}"),
        DisconnectReason::ConnectTimeout => "no CONNACK in time".into(),
        DisconnectReason::KeepAliveTimeout => "no PINGRESP in time".into(),
        DisconnectReason::ConnectionLost => "the broker closed the connection".into(),
        other => format!("{other:?}"),
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::V5 => "5.0",
        Version::V3_1_1 => "3.1.1",
    }
}
