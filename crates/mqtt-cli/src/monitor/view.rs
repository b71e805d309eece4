//! Drawing the monitor: the message list, the topic tree and the menu line.
//!
//! Below 120 columns the panes are stacked (messages above topics), from 120 on they sit side by
//! side. Only the rows on screen are built, whatever the number of messages kept.

use std::time::{Instant, SystemTime};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState, Wrap};

use super::model::{Entry, Monitor, Pane};
use super::payload::{PREVIEW_BYTES, full, human_size, preview};

/// Columns from which the panes sit side by side.
const SIDE_BY_SIDE_WIDTH: u16 = 120;

const MESSAGE_WIDTHS: [Constraint; 6] = [
    Constraint::Length(12), // time
    Constraint::Length(1),  // QoS
    Constraint::Length(1),  // retain
    Constraint::Length(8),  // size
    Constraint::Fill(2),    // topic
    Constraint::Fill(3),    // payload
];

const TOPIC_WIDTHS: [Constraint; 3] = [
    Constraint::Fill(1),   // topic
    Constraint::Length(9), // count
    Constraint::Length(8), // rate
];

/// Where each part goes.
struct Areas {
    messages: Rect,
    topics: Rect,
    menu: Rect,
}

fn areas(area: Rect) -> Areas {
    let [main, menu] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    let [messages, topics] = if area.width >= SIDE_BY_SIDE_WIDTH {
        Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).areas(main)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Fill(1)]).areas(main)
    };
    Areas {
        messages,
        topics,
        menu,
    }
}

/// How many data rows the message list and the topic tree show in a terminal of this size
/// (each pane loses a title line and a header line).
pub(crate) fn page_sizes(area: Rect) -> (usize, usize) {
    let areas = areas(area);
    let rows = |pane: Rect| usize::from(pane.height.saturating_sub(2));
    (rows(areas.messages), rows(areas.topics))
}

/// Draws the whole screen; rates are computed at `now`.
pub(crate) fn draw(frame: &mut Frame<'_>, monitor: &Monitor, now: Instant) {
    let areas = areas(frame.area());
    draw_messages(frame, monitor, areas.messages);
    match monitor.selected_message() {
        Some(entry) if monitor.is_showing_details() => {
            draw_details(frame, monitor, entry, areas.topics);
        }
        _ => draw_topics(frame, monitor, now, areas.topics),
    }
    draw_menu(frame, monitor, areas.menu);
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().add_modifier(Modifier::BOLD).fg(Color::Yellow)
    } else {
        Style::new()
    };
    Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, style))
}

fn header(cells: impl IntoIterator<Item = &'static str>) -> Row<'static> {
    Row::new(cells).style(Style::new().add_modifier(Modifier::UNDERLINED))
}

fn highlight(focused: bool) -> Style {
    if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    }
}

fn draw_messages(frame: &mut Frame<'_>, monitor: &Monitor, area: Rect) {
    let focused = monitor.focus() == Pane::Messages;
    let title = format!(" Messages {} ", monitor.message_count());
    let block = pane_block(title, focused);
    let inner = block.inner(area);
    let cursor = monitor.cursor(Pane::Messages);
    let page = usize::from(inner.height.saturating_sub(1));
    // The payload column's width, as the table will lay it out.
    let payload_width = Layout::horizontal(MESSAGE_WIDTHS)
        .spacing(1)
        .split(inner)
        .last()
        .map_or(0, |column| usize::from(column.width));
    let rows = monitor
        .message_rows(cursor.offset, page)
        .map(|entry| message_row(entry, monitor, payload_width));
    let table = Table::new(rows, MESSAGE_WIDTHS)
        .header(header(["Time (UTC)", "Q", "R", "Size", "Topic", "Payload"]))
        .row_highlight_style(highlight(focused))
        .block(block);
    let mut state = TableState::new().with_selected(cursor.selected.checked_sub(cursor.offset));
    frame.render_stateful_widget(table, area, &mut state);
    if monitor.message_count() == 0 && inner.height > 1 {
        let waiting = Paragraph::new(format!("Waiting for messages from {}", monitor.source()))
            .style(Style::new().add_modifier(Modifier::DIM));
        let line = Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        };
        frame.render_widget(waiting, line);
    }
}

fn message_row(entry: &Entry, monitor: &Monitor, payload_width: usize) -> Row<'static> {
    Row::new([
        clock(entry.at),
        entry.qos.to_string(),
        if entry.retain { "R" } else { "" }.to_owned(),
        human_size(entry.size),
        entry.topic.clone(),
        preview(&entry.prefix, entry.size, monitor.format(), payload_width),
    ])
}

/// `HH:MM:SS.mmm` in UTC.
fn clock(at: SystemTime) -> String {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        since_epoch.subsec_millis()
    )
}

/// The selected message in full, in place of the topic tree.
fn draw_details(frame: &mut Frame<'_>, monitor: &Monitor, entry: &Entry, area: Rect) {
    let block = pane_block(" Message (Esc closes) ".to_owned(), false);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let field = |name: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{name}: "), bold),
            Span::raw(value),
        ])
    };
    let mut lines = vec![
        field("Topic", entry.topic.clone()),
        field(
            "Received",
            format!(
                "{} UTC · QoS {} · {}{}",
                clock(entry.at),
                entry.qos,
                human_size(entry.size),
                if entry.retain { " · retained" } else { "" }
            ),
        ),
    ];
    for (name, value) in &entry.properties {
        lines.push(field(name, value.clone()));
    }
    lines.push(Line::default());
    let payload = full(&entry.prefix, entry.size, monitor.format());
    lines.extend(payload.lines().map(|line| Line::from(line.to_owned())));
    if entry.prefix.len() < entry.size {
        lines.push(Line::styled(
            format!(
                "… the first {} of {} bytes",
                entry.prefix.len().min(PREVIEW_BYTES),
                entry.size
            ),
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    let details = Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false });
    frame.render_widget(details, area);
}

fn draw_topics(frame: &mut Frame<'_>, monitor: &Monitor, now: Instant, area: Rect) {
    let focused = monitor.focus() == Pane::Topics;
    let (tree, at) = monitor.topic_tree(now);
    let title = format!(
        " Topics {} · {:.1} msg/s ",
        tree.topics(),
        tree.total_rate(at)
    );
    let block = pane_block(title, focused);
    let page = usize::from(block.inner(area).height.saturating_sub(1));
    let cursor = monitor.cursor(Pane::Topics);
    let rows = monitor.topic_rows(now, cursor.offset, page).map(|row| {
        let name = match (row.name, row.has_children) {
            ("", _) => "(empty)".to_owned(),
            (name, true) => format!("{name}/"),
            (name, false) => name.to_owned(),
        };
        Row::new([
            Line::from(format!("{}{name}", "  ".repeat(row.depth))),
            Line::from(row.count.to_string()).right_aligned(),
            Line::from(format!("{:.1}", row.rate)).right_aligned(),
        ])
    });
    let table = Table::new(rows, TOPIC_WIDTHS)
        .header(header(["Topic", "    Count", "  Rate/s"]))
        .row_highlight_style(highlight(focused))
        .block(block);
    let mut state = TableState::new().with_selected(cursor.selected.checked_sub(cursor.offset));
    frame.render_stateful_widget(table, area, &mut state);
}

/// The menu on the bottom line: the keys on the left (as many as fit), the state on the right.
fn draw_menu(frame: &mut Frame<'_>, monitor: &Monitor, area: Rect) {
    let key = Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD);
    let status = if monitor.is_paused() {
        format!(
            " PAUSED +{} new │ {} msgs ",
            monitor.received_while_paused(),
            monitor.received()
        )
    } else {
        format!(" LIVE │ {} msgs ", monitor.received())
    };
    let status_style = if monitor.is_paused() {
        Style::new().fg(Color::White).bg(Color::Red)
    } else {
        Style::new().fg(Color::Black).bg(Color::Green)
    };
    let status_width = u16::try_from(status.chars().count()).unwrap_or(u16::MAX);
    let play = if monitor.is_paused() { "Play" } else { "Pause" };
    let format = format!("Format: {}", super::payload::label(monitor.format()));
    let details = if monitor.is_showing_details() {
        "Close"
    } else {
        "Details"
    };
    let items = [
        ("q", "Quit"),
        ("p", play),
        ("f", format.as_str()),
        ("Enter", details),
        ("Tab", "Pane"),
        ("↑↓", "Scroll"),
    ];
    let room = usize::from(area.width.saturating_sub(status_width));
    let mut spans = Vec::new();
    let mut used = 0;
    for (name, label) in items {
        let width = name.chars().count() + label.chars().count() + 3;
        if used + width > room {
            break;
        }
        used += width;
        spans.push(Span::styled(format!(" {name} "), key));
        spans.push(Span::raw(format!("{label} ")));
    }
    let [left, right] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(status_width)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(Paragraph::new(status).style(status_style), right);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::monitor::model::Command;

    fn screen(monitor: &Monitor, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
        terminal
            .draw(|frame| draw(frame, monitor, Instant::now()))
            .expect("draw");
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn monitor_with_messages() -> Monitor {
        let now = Instant::now();
        let mut monitor = Monitor::new(now, 100).with_source("localhost:1883 #".to_owned());
        let (messages, topics) = page_sizes(Rect::new(0, 0, 80, 24));
        monitor.handle_resize(messages, topics);
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(45_296_789);
        for (topic, payload, retain) in [
            ("sensors/temp", &b"21.5"[..], false),
            ("sensors/blob", &[0xde, 0xad, 0xbe, 0xef][..], true),
        ] {
            monitor.handle_message(
                now,
                Entry {
                    at,
                    topic: topic.to_owned(),
                    qos: 1,
                    retain,
                    size: payload.len(),
                    prefix: Bytes::copy_from_slice(payload),
                    properties: vec![("Content type", "text/plain".to_owned())],
                },
            );
        }
        monitor
    }

    #[test]
    fn an_80x24_screen_shows_messages_topics_and_the_menu() {
        let monitor = monitor_with_messages();
        let text = screen(&monitor, 80, 24);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 24);
        assert!(lines[0].contains("Messages 2"), "{text}");
        assert!(lines[1].contains("Time (UTC)") && lines[1].contains("Payload"));
        // Newest first.
        assert!(lines[2].contains("12:34:56.789"), "{text}");
        assert!(lines[2].contains("sensors/blob") && lines[2].contains("de ad be ef"));
        assert!(lines[3].contains("sensors/temp") && lines[3].contains("21.5"));
        assert!(text.contains("Topics 2"), "{text}");
        assert!(
            text.contains("sensors/") && text.contains("  temp"),
            "{text}"
        );
        let menu = lines[23];
        for item in ["q Quit", "p Pause", "f Format: auto", "LIVE", "2 msgs"] {
            assert!(menu.contains(item), "{item:?} not in {menu:?}");
        }
    }

    #[test]
    fn the_menu_shows_pause_and_format() {
        let mut monitor = monitor_with_messages();
        let now = Instant::now();
        monitor.handle_command(now, Command::TogglePause);
        monitor.handle_command(now, Command::CycleFormat);
        monitor.handle_command(now, Command::CycleFormat);
        let text = screen(&monitor, 80, 24);
        let menu = text.lines().last().unwrap_or_default();
        for item in ["p Play", "f Format: text", "PAUSED +0 new", "2 msgs"] {
            assert!(menu.contains(item), "{item:?} not in {menu:?}");
        }
        // Text mode shows the binary payload as (replacement) text, not hex.
        assert!(!text.contains("de ad be ef"), "{text}");
    }

    #[test]
    fn an_empty_monitor_says_what_it_waits_for() {
        let monitor = Monitor::new(Instant::now(), 10).with_source("localhost:1883 #".to_owned());
        let text = screen(&monitor, 80, 24);
        assert!(
            text.contains("Waiting for messages from localhost:1883 #"),
            "{text}"
        );
    }

    #[test]
    fn details_show_the_selected_message_in_full() {
        let mut monitor = monitor_with_messages();
        let now = Instant::now();
        monitor.handle_command(now, Command::ToggleDetails);
        let text = screen(&monitor, 80, 24);
        for item in [
            "Message (Esc closes)",
            "Topic: sensors/blob",
            "Received: 12:34:56.789 UTC · QoS 1 · 4 B · retained",
            "Content type: text/plain",
            "00000000  de ad be ef",
            "Enter Close",
        ] {
            assert!(text.contains(item), "{item:?} not in\n{text}");
        }
        assert!(!text.contains("Topics 2"), "{text}");
        monitor.handle_command(now, Command::CloseDetails);
        assert!(screen(&monitor, 80, 24).contains("Topics 2"));
    }

    #[test]
    fn wide_screens_put_the_panes_side_by_side() {
        let text = screen(&monitor_with_messages(), 160, 30);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.contains("Messages") && first.contains("Topics"),
            "{text}"
        );
    }

    #[test]
    fn tiny_screens_do_not_panic() {
        let mut monitor = monitor_with_messages();
        for details in [false, true] {
            if details {
                monitor.handle_command(Instant::now(), Command::ToggleDetails);
            }
            for (width, height) in [(20, 5), (1, 1), (80, 1), (1, 24), (0, 0), (5, 3)] {
                let _ = screen(&monitor, width, height);
                let _ = page_sizes(Rect::new(0, 0, width, height));
            }
        }
    }

    #[test]
    fn clock_is_utc_with_milliseconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(86_400_000 + 3_723_004);
        assert_eq!(clock(at), "01:02:03.004");
    }
}
