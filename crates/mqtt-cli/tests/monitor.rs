//! `mqtt monitor`, end to end: the terminal UI driven in tmux (keys in, screen out) against our
//! broker and against mosquitto, and its one-line errors.
//!
//! Without tmux (or mosquitto) these tests print a note and pass, except under CI (`CI` set),
//! where a missing tool is a failure.

// The crate root's modules would be looked up beside it, in `tests/`.
#[path = "monitor/brokers.rs"]
mod brokers;
#[path = "monitor/tmux.rs"]
mod tmux;

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;

use brokers::{Broker, Mosquitto, Publisher};
use tmux::Tmux;

const MQTT: &str = env!("CARGO_BIN_EXE_mqtt");

/// Starts the monitor on `filters` in tmux and waits for its menu, which appears once the
/// subscriptions are in place.
fn monitor(port: u16, filters: &[&str]) -> Tmux {
    let port = port.to_string();
    let mut args = vec!["monitor", "-h", "127.0.0.1", "-p", &port];
    args.extend_from_slice(filters);
    let tmux = Tmux::start(Path::new(MQTT), &args);
    tmux.wait_for_all(&["q Quit", "LIVE"]);
    tmux
}

/// The count the topic tree shows for `name` (indented as on screen: `"  temp"`).
fn topic_count(screen: &str, name: &str) -> Option<u64> {
    let tree = screen.lines().skip_while(|line| !line.contains(" Topics "));
    tree.filter(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(' '))
    })
    .find_map(|line| line.split_whitespace().nth(1)?.parse().ok())
}

/// Runs each named test against one broker (a module per broker).
macro_rules! suite {
    ($broker:ident: $($test:ident),* $(,)?) => {
        mod $broker {
            $(
                #[test]
                fn $test() {
                    if !super::Tmux::available() {
                        return;
                    }
                    let Some(broker) = super::Broker::$broker() else { return };
                    super::$test(broker.port());
                }
            )*
        }
    };
}

suite!(ours:
    shows_messages_topics_and_the_menu_and_q_quits,
    enter_shows_the_selected_message_in_full,
    pause_freezes_the_view_while_messages_are_counted,
    f_cycles_the_payload_format_auto_binary_text,
    ctrl_c_quits,
    keys_scroll_the_focused_pane,
);

suite!(mosquitto:
    shows_messages_topics_and_the_menu_and_q_quits,
    enter_shows_the_selected_message_in_full,
    pause_freezes_the_view_while_messages_are_counted,
    f_cycles_the_payload_format_auto_binary_text,
    ctrl_c_quits,
    keys_scroll_the_focused_pane,
);

fn shows_messages_topics_and_the_menu_and_q_quits(port: u16) {
    let tmux = monitor(port, &["sensors/#", "other"]);
    let publisher = Publisher::connect(port);
    // Matches no filter; sent first, so it would arrive before the others if at all.
    publisher.publish("ignored", b"nobody listens");
    publisher.publish("sensors/temp", b"21.5");
    publisher.publish("sensors/hum", b"40");
    publisher.publish("sensors/temp", b"21.7");
    publisher.publish("other", b"x");
    let screen = tmux.wait_for_all(&["Messages 4", "4 msgs", "Topics 3"]);
    assert!(!screen.contains("ignored"), "{screen}");
    // Newest first. (Each filter has a queue of its own in the client, so only the order
    // within one filter is certain.)
    let rows: Vec<&str> = screen.lines().skip(2).take(4).collect();
    let row = |topic: &str, payload: &str| {
        rows.iter()
            .position(|row| row.contains(topic) && row.contains(payload))
            .unwrap_or_else(|| panic!("no row for {topic} {payload}:\n{screen}"))
    };
    assert!(
        row("sensors/temp", "21.7") < row("sensors/temp", "21.5"),
        "{screen}"
    );
    assert!(
        row("sensors/hum", "40") < row("sensors/temp", "21.5"),
        "{screen}"
    );
    row("other", " x");
    // Time, QoS 0 (the subscription's maximum), no retain, size.
    assert!(
        rows[row("sensors/hum", "40")].contains(" 0   2 B "),
        "{screen}"
    );
    assert_eq!(topic_count(&screen, "sensors/"), Some(3), "{screen}");
    assert_eq!(topic_count(&screen, "  temp"), Some(2), "{screen}");
    assert_eq!(topic_count(&screen, "  hum"), Some(1), "{screen}");
    assert_eq!(topic_count(&screen, "other"), Some(1), "{screen}");
    let menu = tmux.menu();
    for item in ["q Quit", "p Pause", "f Format: auto", "LIVE"] {
        assert!(menu.contains(item), "{item:?} not in the menu {menu:?}");
    }

    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

fn pause_freezes_the_view_while_messages_are_counted(port: u16) {
    let tmux = monitor(port, &["#"]);
    let publisher = Publisher::connect(port);
    publisher.publish("before/pause", b"1");
    tmux.wait_for_all(&["before/pause", "1 msgs"]);

    tmux.send_keys(&["p"]);
    tmux.wait_for_all(&["PAUSED +0 new", "p Play"]);
    publisher.publish("while/paused", b"2");
    publisher.publish("while/paused", b"3");
    // Counted, not shown: neither in the list nor in the tree.
    let screen = tmux.wait_for_all(&["PAUSED +2 new", "3 msgs"]);
    assert!(!screen.contains("while"), "{screen}");
    assert!(screen.contains("Messages 1 "), "{screen}");

    tmux.send_keys(&["p"]);
    let screen = tmux.wait_for_all(&["while/paused", "LIVE", "p Pause", "Messages 3 "]);
    assert_eq!(topic_count(&screen, "while/"), Some(2), "{screen}");
    assert!(!screen.contains("PAUSED"), "{screen}");

    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

fn f_cycles_the_payload_format_auto_binary_text(port: u16) {
    let tmux = monitor(port, &["#"]);
    let publisher = Publisher::connect(port);
    // Not UTF-8 (0xff), so auto shows it as hex.
    publisher.publish("bin", &[0xff, 0x00, b'A', b'B', b'C']);
    publisher.publish("txt", b"hello");
    tmux.wait_for_all(&["f Format: auto", "ff 00 41 42 43", "hello"]);

    tmux.send_keys(&["f"]);
    let screen = tmux.wait_for_all(&["f Format: binary", "ff 00 41 42 43", "68 65 6c 6c 6f"]);
    assert!(!screen.contains("hello"), "{screen}");

    tmux.send_keys(&["f"]);
    let screen = tmux.wait_for_all(&["f Format: text", "\u{fffd}·ABC", "hello"]);
    assert!(!screen.contains("41 42 43"), "{screen}");

    tmux.send_keys(&["f"]);
    tmux.wait_for_all(&["f Format: auto", "ff 00 41 42 43", "hello"]);

    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

fn enter_shows_the_selected_message_in_full(port: u16) {
    let tmux = monitor(port, &["#"]);
    let publisher = Publisher::connect(port);
    publisher.publish_with("doc", b"{\n  \"line\": 1,\n  \"next\": 2\n}", |publish| {
        publish.properties.content_type = Some("application/json".into());
        publish.retain = true;
    });
    publisher.publish("other", b"x");
    // The list shows the document on one line.
    tmux.wait_for_all(&["{ \"line\": 1, \"next\": 2 }", "other"]);

    // Enter: the newest message (selected) in full, in place of the topic tree.
    tmux.send_keys(&["Enter"]);
    let screen = tmux.wait_for_all(&["Message (Esc closes)", "Topic: other", "Enter Close"]);
    assert!(!screen.contains(" Topics "), "{screen}");
    // Down selects the document; the details follow, lines kept.
    tmux.send_keys(&["Down"]);
    let screen = tmux.wait_for_all(&["Topic: doc", "Content type: application/json"]);
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let at = lines.iter().position(|line| *line == "  \"line\": 1,");
    assert!(
        at.is_some_and(|at| lines.get(at + 1) == Some(&"  \"next\": 2")),
        "{screen}"
    );
    // Binary: the hex dump.
    tmux.send_keys(&["f"]);
    tmux.wait_for_all(&["00000000  7b 0a 20 20 22 6c 69 6e"]);

    tmux.send_keys(&["Escape"]);
    tmux.wait_for_all(&[" Topics 2", "Enter Details"]);
    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

fn ctrl_c_quits(port: u16) {
    let tmux = monitor(port, &["#"]);
    tmux.send_keys(&["C-c"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

fn keys_scroll_the_focused_pane(port: u16) {
    let tmux = monitor(port, &["#"]);
    let publisher = Publisher::connect(port);
    for i in 0..40 {
        publisher.publish(&format!("n/{i:02}"), b"");
    }
    // Newest first: the oldest are below the fold.
    let screen = tmux.wait_for_all(&["40 msgs", "n/39"]);
    assert!(!screen.contains("n/00"), "{screen}");

    tmux.send_keys(&["End"]);
    let screen = tmux.wait_for_all(&["n/00"]);
    assert!(!screen.contains("n/39"), "{screen}");
    tmux.send_keys(&["Home"]);
    tmux.wait_for_all(&["n/39"]);

    // Tab: the keys now scroll the topic tree (n/ first, then 00, 01, … in name order).
    tmux.send_keys(&["Tab", "End"]);
    let screen = tmux.wait_for("the tree scrolled to its end", |screen| {
        topic_count(screen, "  39").is_some()
    });
    assert_eq!(topic_count(&screen, "n/"), None, "{screen}");
    // The message list did not move.
    assert!(
        screen
            .lines()
            .nth(2)
            .is_some_and(|row| row.contains("n/39")),
        "{screen}"
    );

    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

#[test]
fn a_lost_connection_restores_the_terminal_and_says_so_in_one_line() {
    if !Tmux::available() {
        return;
    }
    let Some(mut mosquitto) = Mosquitto::start(&[]) else {
        return;
    };
    let port = mosquitto.port();
    let tmux = monitor(port, &["#"]);
    mosquitto.kill();
    assert_ne!(tmux.wait_for_exit(), 0);
    let screen = tmux.screen();
    let errors: Vec<&str> = screen.lines().filter(|l| l.starts_with("mqtt:")).collect();
    assert_eq!(errors.len(), 1, "{screen}");
    let expected = format!("mqtt: the connection to 127.0.0.1:{port} ended: ");
    assert!(errors[0].starts_with(&expected), "{screen}");
}

#[test]
fn tiny_and_wide_terminals_are_drawn_without_failing() {
    if !Tmux::available() {
        return;
    }
    let Some(broker) = Broker::ours() else { return };
    let tmux = monitor(broker.port(), &["#"]);
    Publisher::connect(broker.port()).publish("a/b", b"payload");
    tmux.wait_for_all(&["a/b", "1 msgs"]);
    for (width, height) in [(20, 5), (1, 1), (160, 40), (40, 3)] {
        tmux.resize(width, height);
        // Every size has its own first line: wait until the monitor has redrawn for it.
        tmux.wait_for(&format!("a redraw at {width}x{height}"), |screen| {
            let lines: Vec<&str> = screen.lines().collect();
            lines.len() == usize::from(height)
                && lines
                    .first()
                    .is_some_and(|line| line.contains("Messages") || width < 12)
        });
    }
    // Wide: the panes side by side, both titles on the first line.
    tmux.resize(160, 40);
    tmux.wait_for("the panes side by side", |screen| {
        screen
            .lines()
            .next()
            .is_some_and(|line| line.contains("Messages 1") && line.contains("Topics 1"))
    });
    tmux.resize(80, 24);
    tmux.wait_for_all(&["q Quit", "LIVE", "a/b"]);
    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

/// Topics may hold control characters (mosquitto refuses them, our broker does not): an escape
/// sequence in one must be shown, not obeyed by the terminal.
#[test]
fn escape_sequences_in_topics_are_shown_not_obeyed() {
    if !Tmux::available() {
        return;
    }
    let Some(broker) = Broker::ours() else { return };
    let tmux = monitor(broker.port(), &["#"]);
    let publisher = Publisher::connect(broker.port());
    // Would clear the screen and switch to the main screen.
    publisher.publish("evil/\u{1b}[2J\u{1b}[?1049l", b"x");
    let screen = tmux.wait_for_all(&["evil/·[2J·[?1049l", "1 msgs"]);
    assert!(screen.contains("q Quit"), "{screen}");
    assert_eq!(tmux.display("#{alternate_on}"), "1");
    tmux.send_keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn sigterm_restores_the_terminal_and_exits_0() {
    if !Tmux::available() {
        return;
    }
    let Some(broker) = Broker::ours() else { return };
    let tmux = monitor(broker.port(), &["#"]);
    let pid = tmux.program_pid();
    // The shell's own `kill`: no procps needed.
    let killed = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {pid}"))
        .status()
        .expect("sh runs");
    assert!(killed.success());
    assert_eq!(tmux.wait_for_exit(), 0);
}

/// Runs `mqtt monitor ARGS` outside a terminal and returns its exit code and its stderr, which
/// must be exactly one line, without a panic.
fn fails_with_one_line(args: &[&str]) -> String {
    let output = Command::new(MQTT)
        .arg("monitor")
        .args(args)
        .output()
        .expect("mqtt runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(stderr.starts_with("mqtt: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_refused_connection_is_one_line() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let stderr = fails_with_one_line(&["-h", "127.0.0.1", "-p", &port, "#"]);
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn an_unresolved_name_is_one_line() {
    let stderr = fails_with_one_line(&["-h", "no-such-host.invalid", "-p", "1883", "#"]);
    assert!(stderr.contains("no-such-host.invalid"), "{stderr}");
}

#[test]
fn an_invalid_filter_is_one_line() {
    for filter in ["a/#/b", "a+", ""] {
        let stderr = fails_with_one_line(&[filter]);
        assert!(stderr.contains("invalid topic filter"), "{stderr}");
    }
}

#[test]
fn a_connack_refusal_is_one_line_with_its_reason() {
    let Some(mosquitto) = Mosquitto::start(&["allow_anonymous false"]) else {
        return;
    };
    let port = mosquitto.port().to_string();
    for version in ["5", "311"] {
        let stderr = fails_with_one_line(&["-h", "127.0.0.1", "-p", &port, "-V", version, "#"]);
        assert!(stderr.contains("connection refused"), "{stderr}");
        assert!(stderr.contains("Not authorized (0x87)"), "{stderr}");
    }
}

#[test]
fn without_a_terminal_it_says_so_in_one_line() {
    let Some(broker) = Broker::ours() else { return };
    let port = broker.port().to_string();
    let stderr = fails_with_one_line(&["-h", "127.0.0.1", "-p", &port, "#"]);
    assert!(stderr.contains("needs a terminal"), "{stderr}");
}
