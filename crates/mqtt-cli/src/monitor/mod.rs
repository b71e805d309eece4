//! `mqtt monitor`: a live terminal view of the messages on some topic filters.
//!
//! The parts: [`model::Monitor`] is the state (messages, topic tree, pause, format, scrolling)
//! with no terminal and no clock; [`view::draw`] renders it with ratatui; this file connects,
//! subscribes, owns the terminal and runs the loop that feeds the model messages, keys and the
//! time, and redraws at most [`FRAME`] apart (at once after a key).
//!
//! The connection is made and the filters subscribed before the terminal switches to the
//! alternate screen, so that those errors print as one ordinary line. Every way out (a key, a
//! signal, a lost connection, an error, a panic) restores the terminal before anything is
//! printed.

mod model;
mod payload;
mod topics;
mod view;

use std::io::{self, IsTerminal as _, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use mqtt_tokio::{Client, ConnectionEvent, Message, QoS, SubscribeOptions};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::Rect;
use tokio::sync::mpsc;

use crate::client_args::{ConnectArgs, parse_qos};
use model::{Command, Entry, Monitor, Scroll};

/// The shortest time between two redraws caused by messages (keys redraw at once).
const FRAME: Duration = Duration::from_millis(100);

/// Rates change with time alone: redraw at least this often.
const IDLE_REDRAW: Duration = Duration::from_secs(1);

/// Messages handled between two looks at the keyboard, so that a flood cannot starve keys.
const BATCH: usize = 1000;

/// How long the goodbye DISCONNECT may take.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Options of `mqtt monitor`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub(crate) struct Args {
    // Boxed: the subcommands' options are variants of one enum, and these are large.
    #[command(flatten)]
    connect: Box<ConnectArgs>,
    /// Subscribe at this QoS (0, 1 or 2).
    #[arg(short = 'q', long = "qos", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// How many messages the list keeps (the oldest make room for new ones).
    #[arg(long = "keep", default_value_t = model::DEFAULT_CAPACITY, value_parser = clap::value_parser!(usize))]
    keep: usize,
    /// Topic filters to watch.
    #[arg(value_name = "FILTER", default_value = "#")]
    filters: Vec<String>,
}

/// Runs `mqtt monitor`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    for filter in &args.filters {
        crate::client_args::check_filter(filter)?;
    }
    let options = args.connect.options()?;
    let target = format!("{}:{}", options.host(), options.port());
    let source = format!("{target} {}", args.filters.join(" "));
    let client = args.connect.connect().await?;
    // One task per filter feeds one channel. Each subscription has a queue of its own in the
    // client, so messages of different filters that arrive close together may be listed in
    // either order; within a filter the order is the broker's.
    let (messages_tx, messages) = mpsc::channel(BATCH);
    for filter in &args.filters {
        let mut subscription = client
            .subscribe_with(SubscribeOptions::new(filter.clone()).qos(args.qos))
            .await
            .with_context(|| format!("cannot subscribe to {filter:?}"))?;
        let messages_tx = messages_tx.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.recv().await {
                if messages_tx.send(entry(&message)).await.is_err() {
                    break;
                }
            }
        });
    }
    // Once every subscription has ended, `messages` reports the end.
    drop(messages_tx);
    // Checked after connecting, so that connection errors are reported the same everywhere.
    if !io::stdout().is_terminal() {
        bail!("the monitor needs a terminal (standard output is not one); try `mqtt subscribe`");
    }

    let monitor = Monitor::new(Instant::now(), args.keep).with_source(payload::printable(&source));
    let result = {
        let mut screen = Screen::enter()?;
        let result = run_loop(&mut screen, monitor, messages).await;
        screen.leave();
        result
    };
    match result? {
        Exit::Quit => {
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect()).await;
            Ok(())
        }
        Exit::ConnectionLost => bail!(
            "the connection to {target} ended: {}",
            disconnect_reason(&client)
        ),
    }
}

/// A message as the list keeps it: a bounded copy of the payload's start, so that the
/// connection's (possibly large) receive buffers are not held, and text that is safe to print.
fn entry(message: &Message) -> Entry {
    let payload = message.payload();
    let prefix = payload.get(..payload::PREVIEW_BYTES).unwrap_or(payload);
    Entry {
        at: SystemTime::now(),
        topic: payload::printable(message.topic()),
        qos: crate::format::qos_number(message.qos()),
        retain: message.retain(),
        size: payload.len(),
        prefix: Bytes::copy_from_slice(prefix),
        properties: properties(message),
    }
}

/// The message's 5.0 properties, for the details view.
fn properties(message: &Message) -> Vec<(&'static str, String)> {
    let p = message.properties();
    let mut shown = Vec::new();
    if let Some(format) = p.payload_format_indicator {
        shown.push(("Payload format", format!("{format:?}")));
    }
    if let Some(expiry) = p.message_expiry_interval {
        shown.push(("Message expiry", format!("{expiry} s")));
    }
    if let Some(content_type) = &p.content_type {
        shown.push(("Content type", payload::printable(content_type)));
    }
    if let Some(topic) = &p.response_topic {
        shown.push(("Response topic", payload::printable(topic)));
    }
    if let Some(data) = &p.correlation_data {
        let text = payload::preview(data, data.len(), payload::Format::Auto, 64);
        shown.push(("Correlation data", text));
    }
    for user in &p.user_properties {
        let property = format!("{} = {}", user.name, user.value);
        shown.push(("User property", payload::printable(&property)));
    }
    if !p.subscription_identifiers.is_empty() {
        let ids: Vec<String> = p
            .subscription_identifiers
            .iter()
            .map(|id| id.get().to_string())
            .collect();
        shown.push(("Subscription ids", ids.join(", ")));
    }
    shown
}

/// Why the monitor stopped.
enum Exit {
    Quit,
    ConnectionLost,
}

async fn run_loop(
    screen: &mut Screen,
    mut monitor: Monitor,
    mut messages: mpsc::Receiver<Entry>,
) -> anyhow::Result<Exit> {
    let mut keys = screen.keys()?;
    let mut signals = Signals::new()?;
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let due = last_draw.is_none_or(|at| {
            let since = now.saturating_duration_since(at);
            (dirty && since >= FRAME) || since >= IDLE_REDRAW
        });
        if due {
            screen.draw(&mut monitor, now)?;
            last_draw = Some(now);
            dirty = false;
        }
        tokio::select! {
            biased;
            () = signals.recv() => return Ok(Exit::Quit),
            input = keys.recv() => match input {
                Some(Ok(Event::Key(key))) => {
                    if let Some(command) = command(key) {
                        if !monitor.handle_command(Instant::now(), command) {
                            return Ok(Exit::Quit);
                        }
                        last_draw = None;
                    }
                }
                Some(Ok(Event::Resize(..))) => last_draw = None,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error).context("cannot read the terminal"),
                None => bail!("cannot read the terminal"),
            },
            message = messages.recv() => match message {
                Some(entry) => {
                    let now = Instant::now();
                    monitor.handle_message(now, entry);
                    for _ in 1..BATCH {
                        match messages.try_recv() {
                            Ok(entry) => monitor.handle_message(now, entry),
                            Err(_) => break,
                        }
                    }
                    dirty = true;
                }
                None => return Ok(Exit::ConnectionLost),
            },
            _ = tick.tick() => {}
        }
    }
}

/// The command a key stands for.
fn command(key: KeyEvent) -> Option<Command> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let control = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if control => Command::Quit,
        KeyCode::Char('q' | 'Q') => Command::Quit,
        KeyCode::Enter => Command::ToggleDetails,
        KeyCode::Esc => Command::CloseDetails,
        KeyCode::Char('p' | 'P' | ' ') => Command::TogglePause,
        KeyCode::Char('f' | 'F') => Command::CycleFormat,
        KeyCode::Tab | KeyCode::BackTab => Command::SwitchPane,
        KeyCode::Up | KeyCode::Char('k') => Command::Scroll(Scroll::Up),
        KeyCode::Down | KeyCode::Char('j') => Command::Scroll(Scroll::Down),
        KeyCode::PageUp => Command::Scroll(Scroll::PageUp),
        KeyCode::PageDown => Command::Scroll(Scroll::PageDown),
        KeyCode::Home | KeyCode::Char('g') => Command::Scroll(Scroll::Home),
        KeyCode::End | KeyCode::Char('G') => Command::Scroll(Scroll::End),
        _ => return None,
    })
}

/// Why the client's connection ended, from its events.
fn disconnect_reason(client: &Client) -> String {
    let events = client.events();
    let mut reason = None;
    while let Ok(event) = events.try_recv() {
        match event {
            ConnectionEvent::Disconnected(why) => reason = Some(why.to_string()),
            ConnectionEvent::ConnectFailed(why) => reason = Some(why),
            _ => {}
        }
    }
    reason.unwrap_or_else(|| "closed".to_owned())
}

/// The terminal in raw mode on the alternate screen; leaving (or dropping) restores it.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    /// Tells the keyboard thread to stop.
    stop: Arc<AtomicBool>,
    active: bool,
}

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        terminal::enable_raw_mode().context("cannot set up the terminal")?;
        // From here on, dropping `screen` undoes what was done.
        let mut screen = Screen {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))
                .context("cannot set up the terminal")?,
            stop: Arc::new(AtomicBool::new(false)),
            active: true,
        };
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .context("cannot set up the terminal")?;
        screen
            .terminal
            .clear()
            .context("cannot set up the terminal")?;
        Ok(screen)
    }

    /// Redraws, after telling the model how many rows its panes have.
    fn draw(&mut self, monitor: &mut Monitor, now: Instant) -> anyhow::Result<()> {
        let size = self
            .terminal
            .size()
            .context("cannot read the terminal size")?;
        let (messages, topics) = view::page_sizes(Rect::new(0, 0, size.width, size.height));
        monitor.handle_resize(messages, topics);
        self.terminal
            .draw(|frame| view::draw(frame, monitor, now))
            .context("cannot draw")?;
        Ok(())
    }

    /// Key presses and resizes, read on a thread of their own (crossterm's reads block).
    fn keys(&self) -> anyhow::Result<mpsc::Receiver<io::Result<Event>>> {
        let (tx, rx) = mpsc::channel(64);
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name("mqtt-monitor-keys".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Poll with a timeout, so that the thread sees `stop` soon.
                    let input = match event::poll(Duration::from_millis(100)) {
                        Ok(false) => continue,
                        Ok(true) => event::read(),
                        Err(error) => Err(error),
                    };
                    let failed = input.is_err();
                    if tx.blocking_send(input).is_err() || failed {
                        break;
                    }
                }
            })
            .context("cannot start the keyboard thread")?;
        Ok(rx)
    }

    fn leave(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.active) {
            restore_terminal();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Leaves the alternate screen, shows the cursor and turns raw mode off; errors are ignored
/// (there is nothing better to do with them on the way out).
fn restore_terminal() {
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// A panic (a bug) must not leave the terminal in raw mode on the alternate screen, where its
/// message would vanish: restore first, then report as usual.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

/// SIGTERM, SIGHUP and SIGINT from outside (Ctrl-C on the keyboard is a key in raw mode).
struct Signals {
    #[cfg(unix)]
    unix: [tokio::signal::unix::Signal; 3],
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind| signal(kind).context("cannot listen for signals");
            Ok(Self {
                unix: [
                    listen(SignalKind::terminate())?,
                    listen(SignalKind::hangup())?,
                    listen(SignalKind::interrupt())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let [term, hup, int] = &mut self.unix;
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
                _ = int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Command> {
        command(KeyEvent::new(code, modifiers))
    }

    #[test]
    fn keys_map_to_commands() {
        let none = KeyModifiers::NONE;
        assert_eq!(key(KeyCode::Char('q'), none), Some(Command::Quit));
        assert_eq!(
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Command::Quit)
        );
        assert_eq!(key(KeyCode::Char('c'), none), None);
        assert_eq!(key(KeyCode::Char('p'), none), Some(Command::TogglePause));
        assert_eq!(key(KeyCode::Char('f'), none), Some(Command::CycleFormat));
        assert_eq!(key(KeyCode::Tab, none), Some(Command::SwitchPane));
        assert_eq!(key(KeyCode::Enter, none), Some(Command::ToggleDetails));
        assert_eq!(key(KeyCode::Esc, none), Some(Command::CloseDetails));
        assert_eq!(
            key(KeyCode::PageDown, none),
            Some(Command::Scroll(Scroll::PageDown))
        );
        let mut release = KeyEvent::new(KeyCode::Char('q'), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(command(release), None);
    }

    #[test]
    fn filters_are_checked() {
        for good in ["#", "+", "a/+/b", "a/#", "/", "$SYS/#", "$share/g/a/+"] {
            assert!(crate::client_args::check_filter(good).is_ok(), "{good}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "a\0b"] {
            assert!(crate::client_args::check_filter(bad).is_err(), "{bad:?}");
        }
    }
}
