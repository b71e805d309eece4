//! `mqtt broker` with its defaults under a flood of clients that each announce a 200 MiB
//! PUBLISH: packets over 16 KiB reserve their size in the broker's incoming budget (256 MiB)
//! and wait, unread, for room, so the broker's memory stays within the budget and the clients
//! with ordinary packets are served meanwhile. The broker runs as a process of its own, so its
//! resident memory is its own.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::support::{OurBroker, TIMEOUT};

const MIB: usize = 1024 * 1024;

/// A field of /proc/PID/status, in bytes (`VmRSS`, `VmHWM`: the peak).
fn status_bytes(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the broker runs");
    let kib: usize = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    kib * 1024
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A packet: its first byte, the remaining length, the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A 3.1.1 CONNECT with Clean Session and a keep alive of 60 s.
fn connect_v311(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    string(id, &mut body);
    packet(0x10, &body)
}

/// Reads one packet: its first byte and body.
fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).expect("a packet");
    let mut len = 0usize;
    for shift in 0..4 {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).expect("its length");
        len |= usize::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("its body");
    (first[0], body)
}

/// A client with ordinary packets: CONNECT, SUBSCRIBE, a QoS 1 PUBLISH to itself, each
/// answered in time.
fn round_trip(port: u16, id: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(&connect_v311(id)).expect("CONNECT");
    assert_eq!(read_packet(&mut stream), (0x20, vec![0, 0]), "CONNACK");
    let mut subscribe = vec![0, 1];
    string("served", &mut subscribe);
    subscribe.push(1);
    stream
        .write_all(&packet(0x82, &subscribe))
        .expect("SUBSCRIBE");
    assert_eq!(read_packet(&mut stream), (0x90, vec![0, 1, 1]), "SUBACK");
    let mut publish = Vec::new();
    string("served", &mut publish);
    publish.extend_from_slice(&[0, 7]);
    publish.extend_from_slice(b"hello");
    stream.write_all(&packet(0x32, &publish)).expect("PUBLISH");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(read_packet(&mut stream).0 & 0xf0);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0x30, 0x40], "the message and its PUBACK");
}

#[test]
fn a_flood_of_huge_packets_stays_within_the_incoming_budget() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("note: no /proc here; skipped");
        return;
    }
    const FLOOD: usize = 12;
    const ANNOUNCED: usize = 200 * MIB;
    const SENT: usize = 64 * MIB;
    const BUDGET: usize = 256 * MIB;
    let broker = OurBroker::start(&[]);
    let pid = broker.process.id();
    round_trip(broker.port, "before");
    let peak_before = status_bytes(pid, "VmHWM:");

    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Vec<AtomicUsize>> = Arc::new((0..FLOOD).map(|_| AtomicUsize::new(0)).collect());
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let (stop, sent, port) = (stop.clone(), sent.clone(), broker.port);
        flood.push(std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .set_write_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            stream
                .write_all(&connect_v311(&format!("flood-{i}")))
                .expect("CONNECT");
            // PUBLISH QoS 0 to "f", announcing 200 MiB, then as much of it as the broker reads.
            let mut header = vec![0x30];
            varint(ANNOUNCED - 2, &mut header);
            header.extend_from_slice(&[0, 1, b'f']);
            stream.write_all(&header).expect("header");
            let chunk = vec![0x5a; MIB];
            let mut mine = 0;
            while mine < SENT && !stop.load(Ordering::Relaxed) {
                match stream.write(&chunk) {
                    Ok(n) => {
                        mine += n;
                        sent[i].fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("flood-{i}: {e}"),
                }
            }
            // Holds the connection, partly sent, until the test is done.
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            mine
        }));
    }
    // One flood client gets its reservation and sends all it has; the others wait, unread,
    // holding no more than what the kernel buffers. Waits until every flood client has sent
    // everything, or until one has and the others have stopped moving.
    let deadline = Instant::now() + TIMEOUT;
    let progress = || -> Vec<usize> { sent.iter().map(|s| s.load(Ordering::Relaxed)).collect() };
    let mut last = progress();
    let mut still_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = progress();
        let done = now.iter().filter(|&&n| n >= SENT).count();
        if done == FLOOD || (done > 0 && still_since.elapsed() > Duration::from_millis(500)) {
            break;
        }
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        assert!(Instant::now() < deadline, "the flood settles: {last:?}");
    }
    // Ordinary clients are served meanwhile.
    round_trip(broker.port, "during");
    let total: usize = progress().iter().sum();
    let peak = status_bytes(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let per_client: Vec<usize> = flood
        .into_iter()
        .map(|t| t.join().expect("a flood client"))
        .collect();
    let grew = peak.saturating_sub(peak_before);
    assert!(
        grew < BUDGET,
        "the broker's peak resident memory grew by {} MiB (flood clients sent {} MiB: {per_client:?})",
        grew / MIB,
        total / MIB,
    );
    assert!(
        total < FLOOD * SENT,
        "not every flood client was read: {per_client:?}"
    );
    // The flood is gone; the broker is still itself.
    round_trip(broker.port, "after");
}
